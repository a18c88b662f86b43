"""How varied a run's or scenario's dialogues are, and which variable values they cover.

Everything comes from figures stored when each dialogue completed (`review.duplicates`: its
signature row and its run's n-gram vocabulary), never from reading turn texts: a page costs
a few aggregates whatever the number of dialogues.
"""

from __future__ import annotations

from django.db.models import Count, Q, Sum
from django.db.models.fields.json import KeyTextTransform

from generation import variables
from generation.models import Dialogue, GenerationRun, Scenario
from review.models import DialogueSignature, RunNgram

from .figures import Figure, percent, ratio, rounded
from .scope import Scope


def _vocabulary(scope: Scope) -> dict[int, int]:
    """Distinct assistant n-grams over the scope's runs, by n (1 and 2). Within one run each
    n-gram is one row (a plain count); across runs the same n-gram is counted once."""
    rows = RunNgram.objects.filter(dialogues__gt=0)
    if scope.run_id is not None:
        rows = rows.filter(run_id=scope.run_id)
    if scope.scenario_id is not None:
        rows = rows.filter(run__scenario_id=scope.scenario_id)
    distinct = Count("pk") if scope.run_id is not None else Count("key", distinct=True)
    counts = rows.values("n").annotate(distinct=distinct).order_by()
    return {row["n"]: row["distinct"] for row in counts}


def _topics(scope: Scope) -> tuple[int, int]:
    """(topics the scope's complete dialogues cover, topics their scenarios list)."""
    complete = scope.dialogues().filter(status=Dialogue.Status.COMPLETE)
    covered = complete.values("scenario_id", "topic").distinct().order_by().count()
    if scope.run_id is not None:
        scenarios = Scenario.objects.filter(runs__pk=scope.run_id)
    elif scope.scenario_id is not None:
        scenarios = Scenario.objects.filter(pk=scope.scenario_id)
    else:
        scenarios = Scenario.objects.all()
    listed = sum(
        len(set(map(str, topics or []))) for topics in scenarios.values_list("topics", flat=True)
    )
    return covered, listed


def diversity(scope: Scope) -> Figure:
    """Near-duplicate rate, distinct-1/2 of assistant turns, repeated openings, topics."""
    signatures = DialogueSignature.objects.filter(scope.q("dialogue__")).aggregate(
        indexed=Count("pk"),
        near=Count("pk", filter=Q(twin__isnull=False)),
        words=Sum("assistant_words"),
        bigrams=Sum("assistant_bigrams"),
        openings=Count("opening_hash"),
        distinct_openings=Count("opening_hash", distinct=True),
    )
    vocabulary = _vocabulary(scope)
    covered, listed = _topics(scope)
    indexed, openings = signatures["indexed"], signatures["openings"]
    repeated = openings - signatures["distinct_openings"]
    rows = [
        {
            "figure": "Near-duplicate rate",
            "value": percent(signatures["near"], indexed),
            "unit": "%",
            "detail": f"{signatures['near']} of {indexed} dialogues repeat an earlier one",
        },
        {
            "figure": "Distinct-1 (assistant words)",
            "value": rounded(ratio(vocabulary.get(1, 0), signatures["words"]), 3),
            "unit": "",
            "detail": f"{vocabulary.get(1, 0)} distinct of {signatures['words'] or 0} words",
        },
        {
            "figure": "Distinct-2 (assistant word pairs)",
            "value": rounded(ratio(vocabulary.get(2, 0), signatures["bigrams"]), 3),
            "unit": "",
            "detail": f"{vocabulary.get(2, 0)} distinct of {signatures['bigrams'] or 0} pairs",
        },
        {
            "figure": "Opening-turn repetition",
            "value": percent(repeated, openings),
            "unit": "%",
            "detail": f"{repeated} of {openings} openings say what an earlier one said",
        },
        {
            "figure": "Topics covered",
            "value": percent(min(covered, listed), listed),
            "unit": "%",
            "detail": f"{covered} of {listed} topics",
        },
    ]
    return Figure(
        columns=(("figure", "Figure"), ("value", "Value"), ("unit", ""), ("detail", "Counts")),
        rows=rows,
        summary=f"{indexed} dialogues checked; "
        + "; ".join(f"{row['figure']} {row['value']}{row['unit']}" for row in rows[:4])
        + ".",
    )


def _planned(settings: dict | None, variable: variables.Variable) -> dict[str, float]:
    """Each value's planned share (%) in a run: its weight times any over-sampling factor, or
    for balanced coverage the factor alone. Empty outside one run's scope (no `settings`)."""
    if settings is None:
        return {}
    factors = (settings.get("oversample") or {}).get(variable.name, {})
    balanced = settings.get("variable_coverage") == GenerationRun.VariableCoverage.BALANCED
    shares = {
        value: (1 if balanced else weight) * int(factors.get(value, 1))
        for value, weight in zip(variable.values, variable.weights, strict=True)
    }
    total = sum(shares.values())
    return {value: round(100 * share / total, 1) for value, share in shares.items()}


def variable_coverage(scope: Scope) -> Figure:
    """Dialogues per scenario variable value (launched and complete), against the plan."""
    if scope.run_id is not None:
        definitions = Scenario.objects.filter(runs__pk=scope.run_id)
    elif scope.scenario_id is not None:
        definitions = Scenario.objects.filter(pk=scope.scenario_id)
    else:
        definitions = Scenario.objects.exclude(variables=[])
    known: dict[str, variables.Variable] = {}
    for data in definitions.values_list("variables", flat=True):
        for variable in variables.variables_of(data):
            known.setdefault(variable.name, variable)
    settings = None
    if scope.run_id is not None and known:
        runs = GenerationRun.objects.filter(pk=scope.run_id)
        settings = runs.values("variable_coverage", "oversample").first()
    rows = []
    for name, variable in known.items():
        counts = {
            row["value"]: row
            for row in scope.dialogues()
            .annotate(value=KeyTextTransform(name, "variables"))
            .values("value")
            .annotate(
                dialogues=Count("pk"),
                complete=Count("pk", filter=Q(status=Dialogue.Status.COMPLETE)),
            )
            .order_by()
        }
        launched = sum(row["dialogues"] for value, row in counts.items() if value is not None)
        planned = _planned(settings, variable)
        for value in variable.values:
            row = counts.get(value, {})
            rows.append(
                {
                    "value": f"{name}: {value}",
                    "dialogues": row.get("dialogues", 0),
                    "complete": row.get("complete", 0),
                    "share": percent(row.get("dialogues", 0), launched),
                    "planned": planned.get(value),
                }
            )
    missing = [row["value"] for row in rows if not row["dialogues"]]
    summary = f"{len(rows)} variable values" + (
        f"; never used: {', '.join(missing)}." if missing else "; every value used."
    )
    return Figure(
        columns=(
            ("value", "Variable: value"),
            ("dialogues", "Dialogues"),
            ("complete", "Complete"),
            ("share", "% of dialogues"),
            ("planned", "% planned"),
        ),
        rows=rows,
        summary=summary if rows else "No scenario variables.",
    )
