"""The judge's precision and recall against a fixture whose answers are worked out by hand.

The fake judge (the fake OpenAI server) marks turns with known errors; experts then accept,
dismiss, flag and correct through the services, and decide. Figures per category are over
(turn, category) pairs, overall over turns (see review/insights/judge.py).
"""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from review import services
from review.insights.judge import judge_agreement
from review.insights.scope import Scope
from review.models import DialogueReview, Flag, JudgeConfig, Suggestion
from tests.factories import RunFactory, UserFactory, dialogue_with_turns
from tests.generation.conftest import fake_openai, openai_provider  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def mark(turn: int, category: str) -> dict:
    return {"turn": turn, "category": category, "severity": 2, "rationale": f"{category}?"}


class Expert:
    """One reviewer working through one dialogue with the services."""

    def __init__(self, user, dialogue):
        self.user, self.dialogue = user, dialogue

    def turn(self, position):
        return self.dialogue.turns.get(position=position, discarded_at__isnull=True)

    def suggestion(self, position):
        return Suggestion.objects.get(turn=self.turn(position))

    def accept(self, position):
        s = self.suggestion(position)
        return services.suggestion_accept(dialogue_id=self.dialogue.pk, turn_id=s.turn_id,
                                          suggestion_id=s.pk, actor=self.user)  # fmt: skip

    def dismiss(self, position):
        s = self.suggestion(position)
        services.suggestion_dismiss(dialogue_id=self.dialogue.pk, turn_id=s.turn_id,
                                    suggestion_id=s.pk, actor=self.user)  # fmt: skip

    def flag(self, position, category):
        return services.turn_flag(dialogue_id=self.dialogue.pk, turn_id=self.turn(position).pk,
                                  actor=self.user, category=category)  # fmt: skip

    def correct(self, position):
        turn = self.turn(position)
        services.turn_correct(dialogue_id=self.dialogue.pk, turn_id=turn.pk, actor=self.user,
                              text=turn.text + " (corrected)", expected_version=turn.version)  # fmt: skip

    def dismiss_flag(self, flag):
        services.flag_dismiss(dialogue_id=self.dialogue.pk, turn_id=flag.turn_id,
                              flag_id=flag.pk, actor=self.user, reason="fine")  # fmt: skip

    def decide(self, verdict):
        version = DialogueReview.objects.get(pk=self.dialogue.pk).version
        if verdict == "approve":
            services.dialogue_approve(dialogue_id=self.dialogue.pk, actor=self.user,
                                      expected_version=version)  # fmt: skip
        else:
            services.dialogue_reject(dialogue_id=self.dialogue.pk, actor=self.user,
                                     reason="unusable", expected_version=version)  # fmt: skip


@pytest.fixture
def fixture(openai_provider, reviewer):  # noqa: F811
    fake = openai_provider
    run = RunFactory(provider="openai")
    JudgeConfig.objects.create(scenario=run.scenario, rubric="Check it.")

    def judged(n_turns, marks, run=run):
        dialogue = dialogue_with_turns(n_turns, run=run)
        fake.configure(judge_marks=marks)
        assert services.dialogue_judge(dialogue_id=dialogue.pk).status == "done"
        return Expert(reviewer, dialogue)

    # D1, approved. Turn 1: the judge is right (accepted, then corrected). Turn 2: wrong
    # (dismissed). Turn 3: right turn, wrong category (reasoning; the expert flags factual and
    # corrects), left undecided. Turn 4: missed (the expert corrects it without a flag).
    d1 = judged(4, [mark(1, "factual"), mark(2, "tone"), mark(3, "reasoning")])
    d1.accept(0)
    d1.correct(0)
    d1.dismiss(1)
    d1.flag(2, "factual")
    d1.correct(2)
    d1.correct(3)
    d1.decide("approve")
    # D2, rejected. Turn 1: right (accepted, left open). Turn 2: the expert flags factual,
    # then dismisses their own flag: not a mark.
    d2 = judged(2, [mark(1, "unsafe")])
    d2.accept(0)
    d2.dismiss_flag(d2.flag(1, "factual"))
    d2.decide("reject")
    # Not counted: undecided (D3); decided but the judge failed (D4); another run (D5).
    judged(2, [mark(1, "factual")])
    d4 = Expert(reviewer, dialogue_with_turns(2, run=run))
    fake.configure(judge_script=["malformed", "malformed"])
    assert services.dialogue_judge(dialogue_id=d4.dialogue.pk).status == "failed"
    d4.flag(0, "factual")
    d4.decide("reject")
    other = RunFactory(provider="openai", scenario=run.scenario)
    d5 = judged(2, [mark(2, "tone")], run=other)
    d5.dismiss(1)
    d5.decide("approve")
    return run, other


EXPECTED_RUN = {
    # key: (judge's marks, expert's marks, agreed, precision %, recall %)
    "factual": (1, 2, 1, 100.0, 50.0),
    "reasoning": (1, 0, 0, 0.0, None),
    "unsafe": (1, 1, 1, 100.0, 100.0),
    "tone": (1, 0, 0, 0.0, None),
    "overall": (4, 4, 3, 75.0, 75.0),
}


def figures(rows):
    keys = ("judge_marks", "expert_marks", "agreed", "precision", "recall")
    return {row["key"]: tuple(row[k] for k in keys) for row in rows}


def test_precision_and_recall_of_a_run(fixture):
    run, _ = fixture
    figure = judge_agreement(Scope(run_id=run.pk))
    assert figures(figure.rows) == EXPECTED_RUN
    assert figure.totals["dialogues"] == 2
    assert "precision 75.0%, recall 75.0%" in figure.summary


def test_the_scenario_adds_the_other_run(fixture):
    run, _ = fixture
    got = figures(judge_agreement(Scope(scenario_id=run.scenario_id)).rows)
    assert got["tone"] == (2, 0, 0, 0.0, None)
    assert got["overall"] == (5, 4, 3, 60.0, 75.0)


def test_the_command_prints_a_table_and_json(fixture, capsys):
    run, _ = fixture
    call_command("judge_report", "--run", str(run.pk))
    out = capsys.readouterr().out
    assert "Precision (%)" in out and "Overall (turns)" in out
    assert "2 decided dialogues the judge read: precision 75.0%, recall 75.0%" in out
    call_command("judge_report", "--scenario", run.scenario.slug, "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["dialogues"] == 3
    overall = report["rows"][-1]
    assert overall == {"category": "overall", "judge_marks": 5, "expert_marks": 4, "agreed": 3,
                       "precision": 60.0, "recall": 75.0}  # fmt: skip


def test_the_command_refuses_unknown_runs_and_scenarios(db):
    with pytest.raises(CommandError, match="No generation run #999"):
        call_command("judge_report", "--run", "999")
    with pytest.raises(CommandError, match="No scenario with the slug or id 'nope'"):
        call_command("judge_report", "--scenario", "nope")


def test_an_accepted_then_dismissed_flag_counts_against_the_judge(fixture):
    run, _ = fixture
    flag = Flag.objects.get(turn__dialogue__run=run, category="unsafe")
    flag.resolution = Flag.Resolution.DISMISSED
    flag.save()
    got = figures(judge_agreement(Scope(run_id=run.pk)).rows)
    assert got["unsafe"] == (1, 0, 0, 0.0, None)
    assert got["overall"] == (4, 3, 2, 50.0, 66.7)


def test_the_run_and_scenario_pages_show_the_figures(
    fixture, rclient, django_assert_max_num_queries
):
    from django.urls import reverse

    from tests.review.test_insights_views import RUN_PAGE_QUERIES

    run, _ = fixture
    with django_assert_max_num_queries(RUN_PAGE_QUERIES):
        html = rclient.get(reverse("review:insights_run", args=[run.pk])).content.decode()
    assert "How good is the judge" in html and "Overall (turns)" in html
    assert "precision 75.0%, recall 75.0%" in html
    html = rclient.get(reverse("review:insights_scenario", args=[run.scenario_id])).content
    assert "precision 60.0%, recall 75.0%" in html.decode()
    csv = rclient.get(reverse("review:insights_run_csv", args=[run.pk, "judge"])).content.decode()
    assert csv.splitlines()[-1] == "Overall (turns),4,4,3,75.0,75.0"


def test_with_independent_reviews_each_experts_answers_count_once(db):
    """Two blind reviews of one dialogue. Turn 1: both accept the factual mark (one expert
    mark, not two). Turn 2: A dismisses the tone mark, B accepts it: B's flag stands, so the
    experts marked the turn. Turn 3: B flags reasoning, unmarked by the judge. The verdicts
    differ and staff adjudicate, keeping A's correction of turn 1."""
    from review.models import Judgement, ReviewPolicy, Suggestion

    run = RunFactory()
    ReviewPolicy.objects.create(scenario=run.scenario, reviews_required=2)
    JudgeConfig.objects.create(scenario=run.scenario, rubric="Check it.")
    dialogue = dialogue_with_turns(3, run=run)
    Judgement.objects.create(dialogue=dialogue, status="done", transcript="t", mark_count=2)
    for position, category in ((0, "factual"), (1, "tone")):
        turn = dialogue.turns.get(position=position)
        Suggestion.objects.create(turn=turn, category=category, severity=2)
    a = Expert(UserFactory(reviewer=True), dialogue)
    b = Expert(UserFactory(reviewer=True), dialogue)
    a.accept(0)
    a.dismiss(1)
    turn = a.turn(0)
    services.turn_correct(dialogue_id=dialogue.pk, turn_id=turn.pk, actor=a.user,
                          text="Fixed.", expected_version=turn.version)  # fmt: skip
    b.accept(0)
    b.accept(1)
    b.flag(2, "reasoning")
    assert judge_agreement(Scope(run_id=run.pk)).totals["dialogues"] == 0  # under way: blind
    a.decide("approve")
    b.decide("reject")
    staff = UserFactory(is_staff=True)
    services.dialogue_adjudicate(
        dialogue_id=dialogue.pk, actor=staff, texts={turn.pk: "Fixed."}, verdict="approved",
        reason="",
    )  # fmt: skip
    figure = judge_agreement(Scope(run_id=run.pk))
    assert figures(figure.rows) == {
        "factual": (1, 1, 1, 100.0, 100.0),
        "tone": (1, 1, 1, 100.0, 100.0),
        "reasoning": (0, 1, 0, None, 0.0),
        "overall": (2, 3, 2, 100.0, 66.7),
    }
    assert figure.totals["dialogues"] == 1
