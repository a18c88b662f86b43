from __future__ import annotations

import pytest

from generation import rules
from generation.models import Turn

W = Turn.Warning


def assess(text, *, previous=(), position=None, finish="stop", min_turns=2, max_turns=8):
    previous = list(previous)
    return rules.assess(
        raw_text=text,
        finish_reason=finish,
        speaker_name="Teacher",
        partner_name="Student",
        previous=previous,
        end_marker="<END>",
        position=len(previous) if position is None else position,
        min_turns=min_turns,
        max_turns=max_turns,
    )


def test_each_persona_sees_its_own_side():
    teacher = rules.Speaker(0, "Teacher", "You teach.")
    student = rules.Speaker(1, "Student", "You learn.")
    turns = [rules.PastTurn(1, "Why?"), rules.PastTurn(0, "Because."), rules.PastTurn(1, "Ok.")]
    as_student = rules.build_messages(
        speaker=student, opener_position=1, opening_instruction="Ask about sine.", turns=turns
    )
    assert as_student == [
        {"role": "system", "content": "You learn."},
        {"role": "user", "content": "Ask about sine."},
        {"role": "assistant", "content": "Why?"},
        {"role": "user", "content": "Because."},
        {"role": "assistant", "content": "Ok."},
    ]
    as_teacher = rules.build_messages(
        speaker=teacher, opener_position=1, opening_instruction="Ask about sine.", turns=turns
    )
    assert as_teacher == [
        {"role": "system", "content": "You teach."},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Because."},
        {"role": "user", "content": "Ok."},
    ]


def test_end_marker_is_stripped_and_stops():
    verdict = assess("That's all. <END>", previous=["a", "b"])
    assert verdict.text == "That's all."
    assert verdict.stop_reason == "end marker"
    assert verdict.warnings == []


def test_end_marker_before_min_turns_does_not_stop():
    verdict = assess("Bye <END>", previous=[], min_turns=4)
    assert verdict.text == "Bye"
    assert verdict.stop_reason == ""


def test_turn_cap_stops():
    assert (
        assess("More.", previous=["a", "b", "c"], max_turns=4).stop_reason == "turn limit reached"
    )
    assert assess("More.", previous=["a", "b"], max_turns=4).stop_reason == ""


def test_empty_output_is_kept_marked_and_stops_even_before_min_turns():
    verdict = assess("   ", previous=[], min_turns=4)
    assert verdict.warnings == [W.EMPTY]
    assert verdict.stop_reason == "unusable output (empty)"


def test_truncated_output_is_marked_and_goes_on():
    verdict = assess("The identity holds because", previous=["a"], finish="length")
    assert verdict.warnings == [W.TRUNCATED]
    assert verdict.stop_reason == ""


def test_role_flip_is_marked():
    verdict = assess("Student: I think I get it now.", previous=["a"])
    assert W.ROLE_FLIP in verdict.warnings
    assert W.ROLE_FLIP not in assess("I think the student gets it.", previous=["a"]).warnings


def test_near_repeat_is_marked_and_stops_as_a_loop():
    earlier = "The sine of thirty degrees is one half, as the triangle shows."
    verdict = assess(
        "The sine of thirty degrees is one half, as the triangle shows!", previous=[earlier, "ok"]
    )
    assert W.REPETITION in verdict.warnings
    assert verdict.stop_reason == "loop: repeated turn"
    assert assess("Cosine of sixty is also one half.", previous=[earlier, "ok"]).warnings == []


def test_repeat_before_min_turns_is_marked_but_goes_on():
    verdict = assess("Same thing again.", previous=["Same thing again."], min_turns=6)
    assert W.REPETITION in verdict.warnings
    assert verdict.stop_reason == ""


def test_thanks_goodbye_exchange_stops():
    verdict = assess("You're welcome, goodbye!", previous=["x", "y", "Thank you so much!"])
    assert W.LOOP in verdict.warnings
    assert verdict.stop_reason == "loop: thanks/goodbye exchange"
    long_thanks = "Thanks! " + "Now let us look at the cosine rule in detail " * 4
    assert W.LOOP not in assess(long_thanks, previous=["x", "Thank you!"]).warnings


@pytest.mark.parametrize(
    ("template", "unknown"),
    [
        ("Talk about {topic} with {partner}.", []),
        ("{topic} {scenario} {persona} {partner}", []),
        ("Talk about {subject}.", ["subject"]),
        ("Positional {} here", ["{}"]),
        ("Attribute {topic.upper}", ["topic.upper"]),
        ("Literal {{braces}} and {topic}", []),
    ],
)
def test_unknown_placeholders(template, unknown):
    assert rules.unknown_placeholders(template) == unknown


def test_bad_template_syntax_raises():
    with pytest.raises(ValueError):
        rules.unknown_placeholders("Unclosed {topic")
