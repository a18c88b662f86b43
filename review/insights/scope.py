"""What a dashboard asks about: one run, one scenario or everything, and the team's period."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from generation.models import Dialogue, GenerationRun


@dataclass(frozen=True)
class Scope:
    """The dialogues a figure covers, plus the page's options.

    `compare` names the two models the scenario page shows side by side (empty: the two with
    the most turns); `days` is the team page's period.
    """

    run_id: int | None = None
    scenario_id: int | None = None
    compare: tuple[str, str] | None = None
    days: int = 30

    def q(self, prefix: str = "") -> Q:
        """The scope as a filter on Dialogue, or on a model reaching it through `prefix`
        (e.g. `turn__dialogue__` for Flag)."""
        q = Q()
        if self.run_id is not None:
            q &= Q(**{f"{prefix}run_id": self.run_id})
        if self.scenario_id is not None:
            q &= Q(**{f"{prefix}scenario_id": self.scenario_id})
        return q

    def dialogues(self) -> QuerySet[Dialogue]:
        return Dialogue.objects.filter(self.q())

    def runs(self) -> QuerySet[GenerationRun]:
        runs = GenerationRun.objects.all()
        if self.run_id is not None:
            runs = runs.filter(pk=self.run_id)
        if self.scenario_id is not None:
            runs = runs.filter(scenario_id=self.scenario_id)
        return runs
