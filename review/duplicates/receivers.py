"""Follow-up of a completed dialogue: its near-duplicate check, as a task sent by name."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings

# review/tasks.py; named so this module need not import the tasks module.
CHECK_TASK = "review.check_near_duplicates"


def dialogue_completed_check(*, dialogue_id: int, **_: Any) -> None:
    """Enqueue the check (sent after the completion's commit, so the task sees the turns).

    First completions and regenerations alike: a regenerated dialogue's text changed, so its
    signature is replaced. Without a broker the check runs here, at once.
    """
    if current_app.conf.task_always_eager:
        if CHECK_TASK not in current_app.tasks:  # a web process has not imported tasks yet
            current_app.loader.import_default_modules()
        current_app.tasks[CHECK_TASK].apply((dialogue_id,), throw=True)
        return
    current_app.send_task(CHECK_TASK, args=(dialogue_id,), queue=settings.CELERY_TASK_DEFAULT_QUEUE)
