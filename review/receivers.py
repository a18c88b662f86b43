"""What review does when generation announces something (connected in ReviewConfig.ready).

A completed dialogue (first generation or regeneration) is already committed and counted when
these run, in the worker that finished it: they only enqueue review's follow-up tasks. A broker
that cannot take a message costs that follow-up (logged; `find_duplicates --rebuild` and a
regeneration redo them), never the dialogue.
"""

from __future__ import annotations

import logging

from django.dispatch import receiver

from generation.signals import dialogue_completed
from review.models import JudgeConfig
from review.tasks import check_near_duplicates, judge_dialogue

log = logging.getLogger(__name__)


@receiver(dialogue_completed, dispatch_uid="review.judge_completed_dialogue")
def judge_completed_dialogue(sender: object, dialogue_id: int, **kwargs: object) -> None:
    """Send the dialogue to its scenario's judge, if it has one."""
    if not JudgeConfig.objects.filter(enabled=True, scenario__dialogues=dialogue_id).exists():
        return
    try:
        judge_dialogue.delay(dialogue_id)
    except Exception:
        log.exception("could not enqueue the judge of dialogue %s", dialogue_id)


@receiver(dialogue_completed, dispatch_uid="review.check_completed_dialogue")
def check_completed_dialogue(sender: object, dialogue_id: int, **kwargs: object) -> None:
    """Check the dialogue for near-duplicates (a regenerated one's signature is replaced)."""
    try:
        check_near_duplicates.delay(dialogue_id)
    except Exception:
        log.exception("could not enqueue the near-duplicate check of dialogue %s", dialogue_id)
