"""What review does when generation announces something (connected in ReviewConfig.ready)."""

from __future__ import annotations

import logging

from django.dispatch import receiver

from generation.signals import dialogue_completed
from review.models import JudgeConfig
from review.tasks import judge_dialogue

log = logging.getLogger(__name__)


@receiver(dialogue_completed, dispatch_uid="review.judge_completed_dialogue")
def judge_completed_dialogue(sender: object, dialogue_id: int, **kwargs: object) -> None:
    """A completed dialogue (first generation or regeneration) of a scenario with a judge is
    sent to it. The dialogue is already committed and counted, so a broker that cannot take
    the message costs the suggestions, never the dialogue: it is logged, not raised."""
    if not JudgeConfig.objects.filter(enabled=True, scenario__dialogues=dialogue_id).exists():
        return
    try:
        judge_dialogue.delay(dialogue_id)
    except Exception:
        log.exception("could not enqueue the judge of dialogue %s", dialogue_id)
