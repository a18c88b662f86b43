"""A judge pass over a completed dialogue: read it, ask the judge, store its marks as
suggestions, count what it cost in the run. The judge calls its own endpoint and model
(`JudgeConfig.endpoint`, paced to that endpoint's limits like a persona's calls).

Safe to run twice and concurrently (the task is `review.judge_dialogue`): a pass claims the
dialogue's Judgement row for the transcript it reads (live turn ids and versions) under the
dialogue's row lock, and stores its marks only if the row still names that transcript. A
regeneration changes the transcript, so a pass over the old turns never overwrites the marks of
the new ones; a pass left running by a dead worker is taken over once it is older than the
longest a pass can take. The LLM call happens outside any transaction.

A judge that keeps failing records "judge failed: <reason>" and leaves the review alone: the
expert sees the reason on the dialogue and reviews without suggestions.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.engine.endpoints import endpoint_model
from generation.engine.gate import request_gate
from generation.engine.usage import run_totals_add
from generation.llm import ChatRequest
from generation.models import Dialogue, Turn
from generation.services import requests_gated
from review.judge.asking import JudgeAnswer, Target, judge_ask
from review.judge.parsing import ParsedMarks, parse_marks
from review.judge.prompt import MAX_TOKENS, judge_messages, response_schema
from review.models import JudgeConfig, Judgement, Suggestion

log = logging.getLogger(__name__)

FAILED_PREFIX = "judge failed: "


@dataclass(frozen=True)
class Pass:
    """What a claimed pass reads: the dialogue, its judge, its live turns and their signature."""

    dialogue: Dialogue
    config: JudgeConfig
    turns: list[Turn]
    transcript: str


def dialogue_judge(*, dialogue_id: int) -> Judgement | None:
    """Judge the dialogue's live turns once; None when there is nothing to do (no enabled
    judge, not complete, this transcript already judged or being judged)."""
    claimed = judgement_claim(dialogue_id=dialogue_id)
    if claimed is None:
        return None
    config = claimed.config
    request = ChatRequest(
        model=endpoint_model(config.endpoint, config.model),
        messages=judge_messages(config=config, scenario=claimed.dialogue.scenario,
                                turns=claimed.turns),
        temperature=0.0,
        max_tokens=MAX_TOKENS,
        context=_demo_context(claimed),
        response_format=response_schema(config.allowed_categories()),
    )  # fmt: skip

    def parse(text: str) -> ParsedMarks:
        return parse_marks(
            text,
            turn_count=len(claimed.turns),
            categories=config.allowed_categories(),
            severity_max=config.severity_max,
        )

    run = claimed.dialogue.run
    slots = None
    if requests_gated():  # the judge's calls share the run's request slots
        slots = request_gate(run_id=run.pk, limit=run.max_in_flight)
    try:
        target = Target(endpoint=config.endpoint, run=run, slots=slots)
        answer = judge_ask(target, request, parse=parse)
    except Exception as exc:
        # Not an LLM fault (those are in the answer): the gate's Redis, a bug. Record it, so
        # the dialogue does not show a judge "running" for ever, and let the task log it.
        judgement_record(claimed=claimed, answer=JudgeAnswer(error=f"internal error: {exc!r}"))
        raise
    return judgement_record(claimed=claimed, answer=answer)


def _demo_context(claimed: Pass) -> dict[str, object]:
    """What the offline demo provider's scripted judge reads (HTTP providers ignore it)."""
    return {
        "task": "judge",
        "scenario": claimed.dialogue.scenario.slug,
        "turns": [turn.text for turn in claimed.turns],
        "categories": claimed.config.allowed_categories(),
        "severity_max": claimed.config.severity_max,
    }


def stale_after() -> timedelta:
    """The longest a pass can take: up to three calls (structured output refused, one
    re-ask), each with every retry timing out and backing off as long as allowed."""
    per_call = (settings.SYNTHREVIEW_LLM_MAX_RETRIES + 1) * (
        settings.SYNTHREVIEW_LLM_TIMEOUT + settings.SYNTHREVIEW_LLM_RETRY_MAX_SECONDS
    )
    return timedelta(seconds=3 * per_call + 60)


def transcript_signature(turns: list[Turn]) -> str:
    return hashlib.sha256(",".join(f"{t.pk}:{t.version}" for t in turns).encode()).hexdigest()


def judgement_claim(*, dialogue_id: int) -> Pass | None:
    """Mark the dialogue's judgement running for its current transcript, under the dialogue's
    row lock (the lock review writes take first too); None if there is nothing to do."""
    now = timezone.now()
    with transaction.atomic():
        dialogue = (
            Dialogue.objects.select_for_update(of=("self",))
            .select_related("run", "scenario__judge_config__endpoint")
            .filter(pk=dialogue_id)
            .first()
        )
        config = getattr(dialogue.scenario, "judge_config", None) if dialogue else None
        if config is None or not config.enabled or dialogue.status != Dialogue.Status.COMPLETE:
            return None
        turns = list(
            Turn.objects.filter(dialogue=dialogue, discarded_at__isnull=True)
            .select_related("persona")
            .order_by("position")
        )
        if not turns:
            return None
        transcript = transcript_signature(turns)
        current = Judgement.objects.filter(pk=dialogue_id).first()
        if current is not None and current.transcript == transcript:
            live = current.started_at > now - stale_after()
            if current.status != Judgement.Status.RUNNING or live:
                return None
        Judgement.objects.update_or_create(
            dialogue=dialogue,
            defaults={
                "status": Judgement.Status.RUNNING, "transcript": transcript, "error": "",
                "started_at": now, "finished_at": None,
            },
        )  # fmt: skip
    return Pass(dialogue=dialogue, config=config, turns=turns, transcript=transcript)


def judgement_record(*, claimed: Pass, answer: JudgeAnswer) -> Judgement | None:
    """Store the pass's outcome and add its usage to the run, in one commit. The usage is
    counted even when a newer transcript superseded the pass: the tokens were spent."""
    dialogue = claimed.dialogue
    with transaction.atomic():
        run_totals_add(run_id=dialogue.run_id, usage=answer.usage, outcome=None)
        judgement = Judgement.objects.select_for_update().filter(pk=dialogue.pk).first()
        if judgement is None or judgement.transcript != claimed.transcript:
            return None
        judgement.model = answer.model
        judgement.calls = answer.calls
        judgement.prompt_tokens = answer.usage.prompt_tokens
        judgement.completion_tokens = answer.usage.completion_tokens
        judgement.cost_usd = answer.usage.cost_usd
        judgement.finished_at = timezone.now()
        if answer.parsed is None:
            log.warning("judge of dialogue %s failed: %s", dialogue.pk, answer.error)
            judgement.status = Judgement.Status.FAILED
            judgement.error = (FAILED_PREFIX + answer.error)[:5000]
        else:
            parsed = answer.parsed
            judgement.status = Judgement.Status.DONE
            judgement.mark_count = suggestions_replace(turns=claimed.turns, parsed=parsed)
            judgement.dropped_turns = parsed.dropped_turns
            judgement.dropped_categories = parsed.dropped_categories
            judgement.dropped_malformed = parsed.dropped_malformed
        judgement.save()
    return judgement


def suggestions_replace(*, turns: list[Turn], parsed: ParsedMarks) -> int:
    """The pass's marks replace the suggestions nobody answered on these turns; a mark an
    expert already accepted or dismissed (same turn and category) is not suggested again."""
    Suggestion.objects.filter(turn__in=turns, decisions__isnull=True).delete()
    decided = set(Suggestion.objects.filter(turn__in=turns).values_list("turn_id", "category"))
    new = [
        Suggestion(
            turn=turns[mark.turn - 1],
            category=mark.category,
            severity=mark.severity,
            rationale=mark.rationale,
        )
        for mark in parsed.marks
        if (turns[mark.turn - 1].pk, mark.category) not in decided
    ]
    Suggestion.objects.bulk_create(new)
    return len(parsed.marks)
