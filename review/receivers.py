"""What review does when generation announces something or asks (connected in
ReviewConfig.ready).

A completed dialogue (first generation or regeneration) is already committed and counted when
these run, in the worker that finished it: they only enqueue review's follow-up tasks. A broker
that cannot take a message costs that follow-up (logged; `find_duplicates --rebuild` and a
regeneration redo them), never the dialogue.
"""

from __future__ import annotations

import logging

from django.dispatch import receiver

from generation.engine.endpoints import endpoint_model
from generation.models import Scenario
from generation.signals import EndpointCaller, dialogue_completed, endpoint_callers
from review import duplicates
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
    """Queue the dialogue's near-duplicate check (a regenerated one's signature is replaced),
    and send the check task unless one is on its way."""
    try:
        if not duplicates.check_queue(dialogue_id=dialogue_id):
            return
    except Exception:
        log.exception("could not queue the near-duplicate check of dialogue %s", dialogue_id)
        return
    try:
        check_near_duplicates.apply_async(countdown=duplicates.CHECK_DELAY_SECONDS)
    except Exception:
        duplicates.check_queue_reset()
        log.exception("could not enqueue the near-duplicate check of dialogue %s", dialogue_id)


@receiver(endpoint_callers, dispatch_uid="review.judge_endpoint_callers")
def judge_endpoint_callers(
    sender: object, scenarios: list[Scenario], **kwargs: object
) -> list[EndpointCaller]:
    """The enabled judges of these scenarios call their endpoint too (one query): the launch
    refuses a missing key variable, the launch form and the run page list them."""
    if not scenarios:
        return []
    judges = JudgeConfig.objects.filter(
        enabled=True, scenario__in=[scenario.pk for scenario in scenarios]
    ).select_related("endpoint")
    return [
        EndpointCaller(
            judge.scenario_id, "Judge", judge.endpoint, endpoint_model(judge.endpoint, judge.model)
        )
        for judge in judges
    ]
