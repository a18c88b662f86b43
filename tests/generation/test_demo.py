"""The offline demo provider follows any scenario: its turn limits, its personas' names, a
different text per dialogue and per attempt; and it stays deterministic."""

from __future__ import annotations

import pytest

from generation import rules, services
from generation.llm.base import ChatRequest
from generation.llm.demo import DemoClient
from generation.models import Dialogue
from tests.factories import ScenarioFactory

NAMES = ("Ana", "Bo")


def converse(slug="tax-help", *, min_turns=2, max_turns=8, variant=0, attempt=0, topic="tax"):
    """A dialogue as the engine runs it: the demo writes, the rules judge and stop."""
    texts: list[str] = []
    warnings: list[str] = []
    for position in range(max_turns):
        speaker, partner = NAMES[position % 2], NAMES[(position + 1) % 2]
        context = {
            "scenario": slug, "topic": topic, "position": position, "variant": variant,
            "attempt": attempt, "end_marker": "<END>", "min_turns": min_turns,
            "max_turns": max_turns, "speaker": speaker, "partner": partner,
        }  # fmt: skip
        request = ChatRequest(
            model="m", messages=[], temperature=0.7, max_tokens=50, context=context
        )
        verdict = rules.assess(
            raw_text=DemoClient().complete(request).text, finish_reason="stop",
            speaker_name=speaker, partner_name=partner, previous=texts, end_marker="<END>",
            position=position, min_turns=min_turns, max_turns=max_turns,
        )  # fmt: skip
        texts.append(verdict.text)
        warnings += verdict.warnings
        if verdict.stop_reason:
            return texts, verdict.stop_reason, warnings
    return texts, "", warnings


@pytest.mark.parametrize(
    ("slug", "min_turns", "max_turns"),
    [("tax-help", 2, 8), ("tax-help", 9, 14), ("tax-help", 40, 200), ("tax-help", 1, 1),
     ("trig-tutoring", 10, 12), ("trig-tutoring", 2, 4), ("trig-tutoring", 2, 8)],
)  # fmt: skip
def test_every_dialogue_ends_within_the_turn_limits_without_warnings(slug, min_turns, max_turns):
    for variant in range(6):
        texts, stop, warnings = converse(
            slug, min_turns=min_turns, max_turns=max_turns, variant=variant
        )
        assert min_turns <= len(texts) <= max_turns
        assert stop in {"end marker", "turn limit reached"}
        assert warnings == [], (variant, texts)


def test_text_varies_by_dialogue_and_attempt_and_repeats_for_the_same_ones():
    first = converse(variant=1)[0]
    assert converse(variant=1)[0] == first  # deterministic
    assert converse(variant=2)[0] != first
    assert converse(variant=1, attempt=2)[0] != first
    lengths = {len(converse(variant=v, max_turns=12)[0]) for v in range(12)}
    assert len(lengths) > 1  # not every dialogue the same length


def test_unscripted_dialogues_use_the_names_and_the_topic():
    texts = converse(topic="filing a late return")[0]
    assert "filing a late return" in texts[0]
    assert any("Bo" in text for text in texts[::2])  # Ana addresses Bo
    assert any("Ana" in text for text in texts[1::2])


def test_the_example_scripts_keep_their_mistakes_and_ending():
    texts, stop, _ = converse("trig-tutoring", min_turns=2, max_turns=8, topic="the unit circle")
    assert len(texts) == 7 and stop == "end marker"
    assert "the unit circle" in texts[0] and "$" in texts[1]


@pytest.mark.django_db
def test_a_demo_run_follows_the_scenario(django_capture_on_commit_callbacks):
    """Through the engine: the context it sends carries the limits, names and attempt."""
    scenario = ScenarioFactory(slug="tax-help", min_turns=9, max_turns=11)
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_launch(scenario=scenario, count=4, seed=3)
    dialogues = list(Dialogue.objects.filter(run=run).prefetch_related("turns"))
    assert {d.status for d in dialogues} == {Dialogue.Status.COMPLETE}
    for dialogue in dialogues:
        turns = sorted(dialogue.turns.all(), key=lambda t: t.position)
        assert 9 <= len(turns) <= 11
        assert all(not t.warnings for t in turns)
        assert any("Teacher" in t.text for t in turns if t.persona.name == "Student")
