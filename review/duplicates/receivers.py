"""Follow-up of a completed dialogue: its near-duplicate check, as a task sent by name."""

from __future__ import annotations

from typing import Any

from celery import signature

# review/tasks.py; named so this module need not import the tasks module.
CHECK_TASK = "review.check_near_duplicates"


def dialogue_completed_check(*, dialogue_id: int, **_: Any) -> None:
    """Enqueue the check (sent after the completion's commit, so the task sees the turns).

    First completions and regenerations alike: a regenerated dialogue's text changed, so its
    signature is replaced.
    """
    signature(CHECK_TASK, args=(dialogue_id,)).delay()
