"""The diversity and variable-coverage panels, against figures counted by hand."""

from __future__ import annotations

import pytest

from generation import services
from generation.models import Dialogue, Turn
from review import duplicates
from review.insights import diversity
from review.insights.scope import Scope
from tests.factories import RunFactory, ScenarioFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


def _dialogue(run, index, topic, texts):
    dialogue = dialogue_with_turns(len(texts), run=run, index=index, topic=topic)
    for turn, text in zip(dialogue.turns.order_by("position"), texts, strict=True):
        Turn.objects.filter(pk=turn.pk).update(text=text, original_text=text)
    duplicates.dialogue_check(dialogue_id=dialogue.pk)
    return dialogue


def _values(scope):
    return {row["figure"]: row["value"] for row in diversity.diversity(scope).rows}


def test_diversity_figures_and_a_regeneration_taking_its_words_back():
    # The Teacher (assistant) speaks at positions 0 and 2.
    run = RunFactory()
    _dialogue(run, 0, "the unit circle", ["the cat sat", "hello", "the dog sat", "bye"])
    copy = _dialogue(run, 1, "the unit circle", ["the cat sat", "hello", "the dog sat", "bye"])
    _dialogue(run, 2, "sine rule", ["a new cat", "hi there", "runs far away", "ok"])
    # 18 assistant words, 9 distinct; 12 pairs, 8 distinct; openings "the cat sat" twice.
    assert _values(Scope(run_id=run.pk)) == {
        "Near-duplicate rate": 33.3,
        "Distinct-1 (assistant words)": 0.5,
        "Distinct-2 (assistant word pairs)": 0.667,
        "Opening-turn repetition": 33.3,
        "Topics covered": 66.7,
    }
    for turn, text in zip(copy.turns.order_by("position"), ["z y x", "q", "w v", "e"], strict=True):
        Turn.objects.filter(pk=turn.pk).update(text=text)
    duplicates.dialogue_check(dialogue_id=copy.pk)
    # Now 17 words, 14 distinct ("cat" is in two); 11 pairs, all distinct; no copy, no
    # repeated opening.
    assert _values(Scope(run_id=run.pk)) == {
        "Near-duplicate rate": 0.0,
        "Distinct-1 (assistant words)": 0.824,
        "Distinct-2 (assistant word pairs)": 1.0,
        "Opening-turn repetition": 0.0,
        "Topics covered": 66.7,
    }
    assert _values(Scope(scenario_id=run.scenario_id))["Distinct-2 (assistant word pairs)"] == 1.0


def test_variable_coverage_against_the_plan():
    scenario = ScenarioFactory(variables=[{"name": "level", "values": ["new", "old"]}])
    run = services.run_launch(
        scenario=scenario, count=8, seed=1, variable_coverage="balanced",
        oversample={"level": {"old": 3}},
    )  # fmt: skip
    Dialogue.objects.filter(pk=run.dialogues.filter(variables__level="old").first().pk).update(
        status=Dialogue.Status.COMPLETE
    )
    figure = diversity.variable_coverage(Scope(run_id=run.pk))
    assert figure.rows == [
        {"value": "level: new", "dialogues": 2, "complete": 0, "share": 25.0, "planned": 25.0},
        {"value": "level: old", "dialogues": 6, "complete": 1, "share": 75.0, "planned": 75.0},
    ]
    assert figure.summary == "2 variable values; every value used."
    assert diversity.variable_coverage(Scope(run_id=RunFactory().pk)).summary == (
        "No scenario variables."
    )
