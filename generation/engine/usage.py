"""Tokens and cost: added per turn to the dialogue, rolled up into the run once per dialogue.

Each turn's usage goes to its dialogue's `pending_*` fields rather than to the run, whose row
every worker thread shares. While a dialogue is generating, those fields belong to its lease
holder: it read them when it loaded the dialogue, and each turn's save (conditional on the
lease) writes the new totals, so the holder always knows them. The run's totals and its
done/failed counters are updated once per dialogue, exactly once: in the transaction that ends
the dialogue (`generation.engine.finish`), or, for a dialogue that stopped without ending
(cancelled, or whose lease lapsed), by `usage_rollup`, which checks and clears `counted_in_run`
and the pending fields under the dialogue's row lock and leaves a generating dialogue to its
holder. The sweep rolls up what a crash left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F

from generation.models import Dialogue, GenerationRun


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal("0")

    @classmethod
    def pending_of(cls, dialogue: Dialogue) -> Usage:
        """The dialogue's pending usage, as loaded (and kept up to date by its lease holder)."""
        return cls(
            dialogue.pending_prompt_tokens,
            dialogue.pending_completion_tokens,
            dialogue.pending_cost_usd,
        )

    @classmethod
    def priced(cls, *, model: str, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens, completion_tokens, cost(model, prompt_tokens, completion_tokens))

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )

    def as_pending(self) -> dict:
        """The dialogue fields holding this as its pending usage."""
        return {
            "pending_prompt_tokens": self.prompt_tokens,
            "pending_completion_tokens": self.completion_tokens,
            "pending_cost_usd": self.cost_usd,
        }


NO_USAGE = Usage()


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """USD from SYNTHREVIEW_MODEL_PRICES (per 1M input/output tokens); unknown models cost 0."""
    prices = settings.SYNTHREVIEW_MODEL_PRICES.get(model)
    if prices is None:
        return Decimal("0")
    usd = (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000
    return Decimal(f"{usd:.6f}")


PENDING_FIELDS = tuple(NO_USAGE.as_pending())
COUNTED = (Dialogue.Status.COMPLETE, Dialogue.Status.FAILED)


def run_totals_add(*, run_id: int, usage: Usage, outcome: str | None) -> None:
    """Add a dialogue's usage, and its outcome if it is one the run counts, to the run."""
    increments = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_usd": usage.cost_usd,
        "done_count": int(outcome == Dialogue.Status.COMPLETE),
        "failed_count": int(outcome == Dialogue.Status.FAILED),
    }
    changes = {name: F(name) + value for name, value in increments.items() if value}
    if changes:
        GenerationRun.objects.filter(pk=run_id).update(**changes)


def usage_rollup(*, dialogue_id: int) -> None:
    """Move the dialogue's pending usage and its outcome into the run's totals, exactly once.

    For a dialogue that stopped without ending it (cancelled, taken over, lost its lease) and
    for what a crash left behind (the sweep). Repeated or concurrent calls wait for the
    dialogue's row lock, then find nothing to move.
    """
    with transaction.atomic():
        row = (
            Dialogue.objects.select_for_update()
            .filter(pk=dialogue_id)
            .order_by()
            .values("run_id", "status", "counted_in_run", *PENDING_FIELDS)
            .first()
        )
        if row is None or row["status"] == Dialogue.Status.GENERATING:
            return
        pending = Usage(*(row[name] for name in PENDING_FIELDS))
        count_now = row["status"] in COUNTED and not row["counted_in_run"]
        if not (
            pending.prompt_tokens or pending.completion_tokens or pending.cost_usd or count_now
        ):
            return
        Dialogue.objects.filter(pk=dialogue_id).update(
            **NO_USAGE.as_pending(), counted_in_run=row["counted_in_run"] or count_now
        )
        run_totals_add(
            run_id=row["run_id"], usage=pending, outcome=row["status"] if count_now else None
        )
