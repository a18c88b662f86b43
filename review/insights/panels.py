"""The boards: which panels each dashboard shows, and computing a board once per request.

A panel is a title, a selector (a function of the Scope returning a Figure, possibly built
from other selectors' figures listed in `needs`), a plot and the columns its table and CSV
show. A new figure on a page is one more `Panel` in a board tuple. Selectors shared by
several panels run once per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import diversity, judge, quality, team, trends
from .figures import Figure
from .plots import Plot, geometry
from .scope import Scope

Selector = Callable[..., Figure]


@dataclass(frozen=True)
class Panel:
    slug: str
    title: str
    selector: Selector
    plot: Plot
    needs: tuple[Selector, ...] = ()
    columns: tuple[str, ...] = ()  # the table's and the CSV's columns; empty: all of them
    note: str = ""  # what the figure counts, in one sentence
    show_facts: bool = False


@dataclass(frozen=True)
class PanelView:
    """A computed panel, ready for the template."""

    panel: Panel
    figure: Figure
    shapes: dict[str, Any]
    header: list[str]
    table: list[list[Any]]


class Figures:
    """Selectors' results for one scope, each computed at most once."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._done: dict[Selector, Figure] = {}

    def get(self, selector: Selector, needs: Sequence[Selector] = ()) -> Figure:
        if selector not in self._done:
            inputs = [self.get(need) for need in needs]
            self._done[selector] = selector(self.scope, *inputs)
        return self._done[selector]


def panel_figure(panel: Panel, figures: Figures) -> tuple[Figure, list[str], list[list[Any]]]:
    """The panel's figure with its table: the header labels and rows of cells."""
    figure = figures.get(panel.selector, panel.needs)
    labelled = figure.column_labels(panel.columns)
    rows = [[row.get(key) for key, _ in labelled] for row in figure.rows]
    return figure, [label for _, label in labelled], rows


def board_compute(board: Sequence[Panel], scope: Scope) -> list[PanelView]:
    figures = Figures(scope)
    views = []
    for panel in board:
        figure, header, table = panel_figure(panel, figures)
        views.append(PanelView(panel, figure, geometry(figure, panel.plot), header, table))
    return views


def panel_find(board: Sequence[Panel], slug: str) -> Panel | None:
    return next((panel for panel in board if panel.slug == slug), None)


CATEGORY_KEYS = tuple(key for key, _ in quality.CATEGORIES)
CATEGORY_SHORT = tuple(str(label).removesuffix(" error") for _, label in quality.CATEGORIES)

FUNNEL = Panel(
    "funnel", "From generated to exported", quality.funnel, Plot("hbar", "stage", ("dialogues",)),
    note="Exported: approved dialogues a finished export selected (its filters) and that were "
    "approved before it started.",
)  # fmt: skip
FLAGS_BY_TURN = Panel(
    "flags-by-turn", "Where dialogues go wrong: flags by turn and category",
    quality.flags_by_position, Plot("heatmap", "turn", CATEGORY_KEYS, headers=CATEGORY_SHORT),
    note="Each cell counts reviewers' flags on that turn (1 = the opening turn).",
)  # fmt: skip
STOP_REASONS = Panel(
    "stop-reasons", "Why dialogues ended", quality.stop_reasons,
    Plot("hbar", "stop_reason", ("dialogues",)),
)  # fmt: skip
WARNINGS = Panel(
    "warnings", "Automatic warnings by type", quality.turn_usage,
    Plot("hbar", "warning", ("turns",)), note="Live turns carrying each warning.",
)  # fmt: skip
COST = Panel(
    "cost", "What an approved dialogue costs", quality.cost_per_approved, Plot("table"),
    needs=(quality.turn_usage,),
    note="Everything generated (rejected and regenerated output included) divided by the "
    "approved dialogues.",
)  # fmt: skip
LATENCY = Panel(
    "latency", "Turn latency", quality.latency_histogram, Plot("hbar", "latency", ("turns",)),
    needs=(quality.turn_usage,),
)  # fmt: skip
APPROVAL_PER_RUN = Panel(
    "approval-per-run", "Approval rate, run by run", trends.runs_over_time,
    Plot("line", "run", ("approval_rate",), unit="%"),
    note="Approved as a share of reviewed dialogues, runs oldest first.",
)  # fmt: skip
FLAGS_PER_RUN = Panel(
    "flags-per-run", "Flags per reviewed dialogue, run by run", trends.runs_over_time,
    Plot("line", "run", ("flags_per_dialogue",)),
)  # fmt: skip
MODEL_CORRECTED = Panel(
    "models-corrected", "Which persona model is corrected most", trends.models,
    Plot("hbar", "model", ("corrected_pct",), unit="%"),
    columns=("model", "turns", "corrected", "corrected_pct"),
    note="Live turns whose text a reviewer changed, per model that wrote them.",
)  # fmt: skip
MODEL_FLAGS = Panel(
    "models-flags", "Flags per 100 turns by model and category", trends.models,
    Plot("heatmap", "model", CATEGORY_KEYS, headers=CATEGORY_SHORT),
    columns=("model", "turns", *CATEGORY_KEYS),
)  # fmt: skip
MODEL_COMPARE = Panel(
    "models-compare", "Two models side by side", trends.model_comparison,
    Plot("grouped", "category", ("m0", "m1")), needs=(trends.models,),
    note="Per 100 live turns each model wrote.",
)  # fmt: skip
PER_HOUR = Panel(
    "per-hour", "Dialogues per hour", team.reviewers, Plot("hbar", "reviewer", ("per_hour",)),
    columns=("reviewer", "verdicts", "per_hour"),
    note="Verdicts per clock hour in which the reviewer gave at least one.",
)  # fmt: skip
MEDIAN_TIME = Panel(
    "median-time", "Median minutes per dialogue", team.reviewers,
    Plot("hbar", "reviewer", ("median_minutes",)), columns=("reviewer", "median_minutes"),
    note="From the reviewer's claim of a dialogue to their verdict.",
)  # fmt: skip
CORRECTIONS = Panel(
    "corrections", "Corrections per dialogue", team.reviewers,
    Plot("hbar", "reviewer", ("corrections_per_dialogue",)),
    columns=("reviewer", "verdicts", "corrections_per_dialogue"),
    note="Turn edits saved, per dialogue the reviewer gave a verdict on.",
)  # fmt: skip
DIVERSITY = Panel(
    "diversity", "How varied the dialogues are", diversity.diversity, Plot("table"),
    note="From figures stored as each dialogue completed: near-duplicates of an earlier "
    "dialogue, distinct words and word pairs over all assistant turns (1 = never repeated), "
    "opening turns that repeat an earlier one, topics used of those listed.",
)  # fmt: skip
VARIABLES = Panel(
    "variables", "Scenario variable coverage", diversity.variable_coverage,
    Plot("hbar", "value", ("dialogues",)),
    note="Dialogues launched with each variable value; the plan is the value's weight (times "
    "its over-sampling factor), or an equal share when the run is balanced.",
)  # fmt: skip
BACKLOG = Panel(
    "backlog", "Verdicts per day and the backlog", team.backlog,
    Plot("line", "day", ("verdicts",)), show_facts=True,
)  # fmt: skip

JUDGE = Panel(
    "judge", "How good is the judge: its marks against the expert's", judge.judge_agreement,
    Plot("grouped", "category", ("precision", "recall"), unit="%"),
    note="Decided dialogues the judge read. Per category: (turn, category) pairs, the judge's "
    "suggestions against the expert's flags left standing; overall: turns the judge marked "
    "against turns the expert flagged or corrected.",
)  # fmt: skip

RUN_BOARD = (
    FUNNEL,
    FLAGS_BY_TURN,
    JUDGE,
    STOP_REASONS,
    WARNINGS,
    COST,
    LATENCY,
    DIVERSITY,
    VARIABLES,
)
SCENARIO_BOARD = (
    FUNNEL, APPROVAL_PER_RUN, FLAGS_PER_RUN, FLAGS_BY_TURN, JUDGE, MODEL_CORRECTED, MODEL_FLAGS,
    MODEL_COMPARE, STOP_REASONS, WARNINGS, COST, LATENCY, DIVERSITY, VARIABLES,
)  # fmt: skip
TEAM_BOARD = (BACKLOG, PER_HOUR, MEDIAN_TIME, CORRECTIONS)
