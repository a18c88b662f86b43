"""Dashboard figures against values computed by hand on a small, fully known fixture."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from generation.models import Dialogue, GenerationRun, Turn
from review.insights import panels, quality, team, trends
from review.insights.panels import Figures
from review.insights.plots import geometry
from review.insights.scope import Scope
from review.models import DatasetExport, DialogueReview, Flag, ReviewEvent, TurnRevision
from tests.factories import RunFactory, ScenarioFactory, UserFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


@dataclass
class World:
    run: GenerationRun
    other_run: GenerationRun
    dialogues: list[Dialogue]
    start: datetime


def _decide(dialogue, status, actor, at, *, claimed):
    DialogueReview.objects.create(dialogue=dialogue, status=status, decided_by=actor, decided_at=at)
    ReviewEvent.objects.create(dialogue=dialogue, actor=actor, kind="claim", created_at=claimed)
    kind = "approve" if status == "approved" else "reject"
    ReviewEvent.objects.create(dialogue=dialogue, actor=actor, kind=kind, created_at=at)


def _turn(dialogue, position):
    return dialogue.turns.get(position=position, discarded_at__isnull=True)


def _exports(run, ds, minutes):
    """Run 1 exported after ds[0]'s approval only (ds[1] was approved later); one by dialogue
    id covering the rejected ds[2] (never counted); a failed one covering everything."""
    DatasetExport.objects.create(
        format="openai", status="done", filters={"run_ids": [run.pk]}, started_at=minutes(15)
    )
    DatasetExport.objects.create(
        format="openai", status="done", filters={"dialogue_ids": [ds[2].pk]},
        started_at=minutes(40),
    )  # fmt: skip
    DatasetExport.objects.create(format="dpo", status="failed", started_at=minutes(90))


def build_world(suffix: str = "") -> World:
    """Run 1: four complete 4-turn dialogues (approved, approved, rejected, awaiting) and a
    failed one; run 2 (same scenario, later): an approved and a rejected dialogue.

    alice decides run 1's first three at start+10, +30, +34 minutes (claims at +0, +10, +30:
    10, 20 and 4 minutes, median 10), all in one clock hour. bob decides run 2's at +56 and
    +70 minutes (claims at +50 and +60: 6 and 10 minutes, median 8), in two clock hours.
    """
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    start += timedelta(minutes=2)
    minutes = lambda n: start + timedelta(minutes=n)  # noqa: E731
    alice, bob = UserFactory(username=f"alice{suffix}"), UserFactory(username=f"bob{suffix}")
    scenario = ScenarioFactory(variables=[{"name": "level", "values": ["new", "old", "rare"]}])
    finished = {"status": "finished", "scenario": scenario}
    run = RunFactory(**finished, cost_usd=Decimal("2.00"), created_at=minutes(-600))
    other = RunFactory(**finished, created_at=minutes(-300))
    ds = [
        dialogue_with_turns(4, run=run, index=i, variables={"level": "old" if i else "new"})
        for i in range(4)
    ]
    Dialogue.objects.create(run=run, scenario=scenario, index=4, topic="x", status="failed")
    e1, e2 = (dialogue_with_turns(2, run=other, index=i) for i in range(2))
    for d, reason in zip(ds, ["turn limit reached"] * 3 + ["end marker"], strict=True):
        Dialogue.objects.filter(pk=d.pk).update(stop_reason=reason)
    Dialogue.objects.filter(pk=ds[0].pk).update(pending_cost_usd=Decimal("0.5"))
    # Every turn: 10 prompt and 5 completion tokens, 300 ms; models by position.
    Turn.objects.update(prompt_tokens=10, completion_tokens=5, latency_ms=300)
    Turn.objects.filter(dialogue__run=run, position__in=[0, 2]).update(model="teacher-a")
    Turn.objects.filter(dialogue__run=run, position__in=[1, 3]).update(model="student-b")
    Turn.objects.filter(dialogue__run=other).update(model="teacher-c")
    Turn.objects.filter(pk=_turn(ds[0], 0).pk).update(warnings=["repetition"])
    Turn.objects.filter(pk=_turn(ds[1], 2).pk).update(warnings=["empty", "truncated"])
    # A turn a regeneration discarded: its tokens count (paid for), its warning does not.
    discarded = Turn.objects.create(
        dialogue=ds[1], position=3, persona=_turn(ds[1], 3).persona, side="user",
        original_text="old", text="old", warnings=["loop"], prompt_tokens=10,
        completion_tokens=5, latency_ms=5000, model="student-b", discarded_at=minutes(1),
    )  # fmt: skip
    for turn, category in [
        (_turn(ds[0], 1), "factual"), (_turn(ds[0], 1), "tone"), (_turn(ds[1], 1), "factual"),
        (_turn(ds[2], 3), "reasoning"), (discarded, "reasoning"), (_turn(e1, 0), "factual"),
    ]:  # fmt: skip
        Flag.objects.create(turn=turn, category=category, created_by=alice)
    corrected = _turn(ds[0], 1)
    Turn.objects.filter(pk=corrected.pk).update(text="fixed")
    for kind in ("edit", "edit", "revert"):
        TurnRevision.objects.create(
            turn=corrected, author=alice, kind=kind, before="a", after="b", version=2,
            created_at=minutes(5),
        )  # fmt: skip
    _decide(ds[0], "approved", alice, minutes(10), claimed=minutes(0))
    _decide(ds[1], "approved", alice, minutes(30), claimed=minutes(10))
    _decide(ds[2], "rejected", alice, minutes(34), claimed=minutes(30))
    _decide(e1, "approved", bob, minutes(56), claimed=minutes(50))
    _decide(e2, "rejected", bob, minutes(70), claimed=minutes(60))
    _exports(run, ds, minutes)
    return World(run=run, other_run=other, dialogues=ds, start=start)


@pytest.fixture
def world() -> World:
    return build_world()


def _rows(figure, key):
    return {row[key]: row for row in figure.rows}


def test_funnel(world):
    rows = _rows(quality.funnel(Scope(run_id=world.run.pk)), "stage")
    counts = {stage: row["dialogues"] for stage, row in rows.items()}
    assert counts == {"Generated": 4, "Reviewed": 3, "Approved": 2, "Rejected": 1, "Exported": 1}
    assert rows["Approved"]["share"] == 50.0


def test_funnel_counts_a_later_export_of_everything(world):
    DatasetExport.objects.create(format="sharegpt", status="done", started_at=timezone.now())
    counts = {r["stage"]: r["dialogues"] for r in quality.funnel(Scope()).rows}
    assert counts["Exported"] == 3  # ds[0], ds[1] and run 2's approved dialogue


def test_flags_by_turn(world):
    figure = quality.flags_by_position(Scope(run_id=world.run.pk))
    assert [row["turn"] for row in figure.rows] == [1, 2, 3, 4]
    assert figure.rows[1]["factual"] == 2 and figure.rows[1]["tone"] == 1
    assert figure.rows[3]["reasoning"] == 2  # the discarded turn's flag counts too
    assert sum(row["factual"] for row in figure.rows) == 2  # run 2's flag is not in run 1
    assert figure.summary == "5 flags. Most on turn 2."


def test_stop_reasons_warnings_and_usage(world):
    scope = Scope(run_id=world.run.pk)
    assert [(r["stop_reason"], r["dialogues"]) for r in quality.stop_reasons(scope).rows] == [
        ("turn limit reached", 3),
        ("end marker", 1),
    ]
    usage = quality.turn_usage(scope)
    assert {r["warning"]: r["turns"] for r in usage.rows} == {
        "Empty output": 1, "Truncated (hit max tokens)": 1,
        "Role flip (spoke as the other persona)": 0, "Repeats an earlier turn": 1,
        "Closing loop (thanks/goodbye exchange)": 0,
    }  # fmt: skip
    latency = {r["latency"]: r["turns"] for r in quality.latency_histogram(scope, usage).rows}
    assert latency["0.25–0.5 s"] == 16 and latency["4–8 s"] == 1 and sum(latency.values()) == 17


def test_cost_per_approved_dialogue(world):
    scope = Scope(run_id=world.run.pk)
    figure = quality.cost_per_approved(scope, quality.turn_usage(scope))
    rows = _rows(figure, "figure")
    # 17 turns (16 live + 1 discarded) × 10 prompt tokens over 2 approved dialogues.
    assert rows["Prompt tokens"] == {"figure": "Prompt tokens", "total": 170, "per_approved": 85}
    assert rows["Completion tokens"]["per_approved"] == 42.5
    assert rows["Generation time (s)"]["total"] == 9.8  # 16 × 0.3 s + 5 s
    assert rows["Generation time (s)"]["per_approved"] == 4.9
    assert rows["Cost (USD)"]["total"] == 2.5  # rolled up 2.00 + pending 0.50
    assert rows["Cost (USD)"]["per_approved"] == 1.25


def test_runs_over_time(world):
    figure = trends.runs_over_time(Scope(scenario_id=world.run.scenario_id))
    first, second = figure.rows
    assert (first["run"], first["generated"], first["reviewed"]) == (f"#{world.run.pk}", 4, 3)
    assert first["approval_rate"] == 66.7 and first["flags_per_dialogue"] == 1.67
    assert (second["approval_rate"], second["flags_per_dialogue"]) == (50.0, 0.5)


def test_models_and_comparison(world):
    scope = Scope(scenario_id=world.run.scenario_id, compare=("teacher-a", "teacher-c"))
    by_model = trends.models(scope)
    rows = _rows(by_model, "model")
    assert [row["model"] for row in by_model.rows] == ["student-b", "teacher-a", "teacher-c"]
    assert (rows["student-b"]["turns"], rows["student-b"]["corrected"]) == (8, 1)
    assert rows["student-b"]["corrected_pct"] == 12.5
    # student-b: factual 2, tone 1, reasoning 2 (one on a discarded turn) per 8 live turns.
    assert (rows["student-b"]["factual"], rows["student-b"]["reasoning"]) == (25.0, 25.0)
    assert rows["teacher-c"]["factual"] == 25.0  # 1 flag per 4 turns
    compared = trends.model_comparison(scope, by_model)
    assert compared.columns[1:] == (("m0", "teacher-a"), ("m1", "teacher-c"))
    assert _rows(compared, "category")["Factual error"] == {
        "category": "Factual error", "m0": 0.0, "m1": 25.0,
    }  # fmt: skip
    default = trends.model_comparison(Scope(), by_model)
    assert [label for _, label in default.columns[1:]] == ["student-b", "teacher-a"]


def test_reviewers(world):
    rows = _rows(team.reviewers(Scope(days=30)), "reviewer")
    assert rows["alice"] == {
        "reviewer": "alice", "verdicts": 3, "per_hour": 3.0, "median_minutes": 10.0,
        "corrections_per_dialogue": 0.67,
    }  # fmt: skip
    assert rows["bob"] == {
        "reviewer": "bob", "verdicts": 2, "per_hour": 1.0, "median_minutes": 8.0,
        "corrections_per_dialogue": 0.0,
    }  # fmt: skip


def test_reviewers_outside_the_period_do_not_count(world):
    ReviewEvent.objects.update(created_at=timezone.now() - timedelta(days=40))
    assert team.reviewers(Scope(days=30)).rows == []
    assert len(team.reviewers(Scope(days=90)).rows) == 2


def test_backlog_and_the_day_it_clears(world):
    figure = team.backlog(Scope(days=30))
    assert len(figure.rows) == 30 and sum(row["verdicts"] for row in figure.rows) == 5
    facts = dict(figure.facts)
    assert facts["Backlog"] == "1 dialogues"  # ds[3]: complete, no verdict
    assert facts["Pace (last 7 days)"] == "0.7 verdicts a day"
    # 1 waiting at 5/7 a day: ceil(1.4) = 2 days from today.
    assert facts["Clears"] == (timezone.localdate() + timedelta(days=2)).isoformat()


def test_backlog_without_recent_verdicts_never_clears(world):
    ReviewEvent.objects.update(created_at=timezone.now() - timedelta(days=20))
    assert "not at this pace" in dict(team.backlog(Scope(days=30)).facts)["Clears"]


def test_every_panel_of_every_board_draws(world):
    for board, scope in [
        (panels.RUN_BOARD, Scope(run_id=world.run.pk)),
        (panels.SCENARIO_BOARD, Scope(scenario_id=world.run.scenario_id)),
        (panels.TEAM_BOARD, Scope()),
    ]:
        for view in panels.board_compute(board, scope):
            assert view.table, view.panel.slug
            if view.panel.plot.kind != "table":
                assert view.shapes["height"] > 0, view.panel.slug


def test_shared_selectors_run_once(world, django_assert_max_num_queries):
    figures = Figures(Scope(run_id=world.run.pk))
    with django_assert_max_num_queries(1):
        figures.get(quality.turn_usage)
        figures.get(quality.latency_histogram, (quality.turn_usage,))
        figures.get(quality.turn_usage)


def test_empty_scope_draws_nothing_and_divides_by_nothing(db):
    run = RunFactory()
    for view in panels.board_compute(panels.RUN_BOARD, Scope(run_id=run.pk)):
        assert view.figure.summary
    cost = quality.cost_per_approved(Scope(run_id=run.pk), quality.turn_usage(Scope(run_id=run.pk)))
    assert all(row["per_approved"] is None for row in cost.rows)
    assert (
        geometry(quality.flags_by_position(Scope(run_id=run.pk)), panels.FLAGS_BY_TURN.plot) == {}
    )
