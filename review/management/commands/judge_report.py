"""`manage.py judge_report`: how often the judge's marks agreed with the experts' verdicts."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from generation.models import GenerationRun, Scenario
from review.insights.judge import COLUMNS, judge_agreement
from review.insights.scope import Scope


class Command(BaseCommand):
    help = (
        "Precision and recall of the judge per category and overall, over the dialogues "
        "experts have decided (see docs/judge.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, metavar="ID", help="Only this generation run.")
        parser.add_argument("--scenario", metavar="SLUG", help="Only this scenario (slug or id).")
        parser.add_argument("--json", action="store_true", help="JSON instead of a table.")

    def handle(self, *args: Any, **opts: Any) -> None:
        scope = Scope(run_id=_run_id(opts["run"]), scenario_id=_scenario_id(opts["scenario"]))
        figure = judge_agreement(scope)
        if opts["json"]:
            report = {
                "run": scope.run_id,
                "scenario": scope.scenario_id,
                "dialogues": figure.totals["dialogues"],
                "rows": [
                    {"category": row["key"], **{k: row[k] for k, _ in COLUMNS[1:]}}
                    for row in figure.rows
                ],
            }
            self.stdout.write(json.dumps(report, indent=2))
            return
        self.stdout.write(_table(figure.rows))
        self.stdout.write(figure.summary)


def _run_id(value: int | None) -> int | None:
    if value is not None and not GenerationRun.objects.filter(pk=value).exists():
        raise CommandError(f"No generation run #{value}.")
    return value


def _scenario_id(value: str | None) -> int | None:
    if not value:
        return None
    found = Scenario.objects.filter(slug=value).values_list("pk", flat=True).first()
    if found is None and value.isdigit():
        found = Scenario.objects.filter(pk=int(value)).values_list("pk", flat=True).first()
    if found is None:
        raise CommandError(f"No scenario with the slug or id {value!r}.")
    return found


def _table(rows: list[dict]) -> str:
    header = [label for _, label in COLUMNS]
    cells = [[str(row[key]) if row[key] is not None else "–" for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )
