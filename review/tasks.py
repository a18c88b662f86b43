"""Celery tasks of the review app: ids in, one service call each, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import IntegrityError, OperationalError

from review import duplicates, export, services

logger = logging.getLogger(__name__)


@shared_task(name="review.run_dataset_export", acks_late=True, ignore_result=True)
def run_dataset_export(export_id: int) -> None:
    """Write one export. A redelivered message (worker lost after starting) runs it again from
    the start: the output is deterministic and replaces the temporary file, never a finished
    one; an export already done, failed or held by a live worker is left alone."""
    try:
        export.dataset_export_claim_and_run(export_id=export_id)
    except (export.ExportError, OSError) as exc:
        # Recorded on the export row for the admin; nothing transient to retry.
        logger.warning("Export %s failed: %s", export_id, exc)


@shared_task(name="review.judge_dialogue", acks_late=True, ignore_result=True)
def judge_dialogue(dialogue_id: int) -> None:
    """The judge's pass over a completed dialogue. LLM faults are retried inside and end as
    "judge failed: <reason>" on the dialogue; a redelivered message finds the transcript
    judged (or being judged) and returns."""
    services.dialogue_judge(dialogue_id=dialogue_id)


@shared_task(
    name="review.check_near_duplicates",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError, IntegrityError),
    retry_backoff=True,
    max_retries=5,
)
def check_near_duplicates(dialogue_id: int | None = None) -> None:
    """Check every pending dialogue (completed or regenerated, not yet checked) in batches.
    A message naming a dialogue (as messages queued by earlier versions do) queues it first.
    A redelivered or duplicate task finds fewer or none pending. A lost connection or a
    deadlock victim is retried; the batch's transaction rolled back, its dialogues stay
    pending."""
    if dialogue_id is not None:
        duplicates.statements.pending_add(dialogue_id)
    duplicates.pending_check()
