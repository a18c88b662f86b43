"""The demo provider's scripted judge: right marks on the scripts' mistakes, a few wrong ones."""

from __future__ import annotations

import json

from generation.llm import ChatRequest
from generation.llm.demo import DemoClient
from generation.llm.demo_judge import SCRIPTED_MARKS, scripted_judgement

MISTAKE = "I can help. To verify you, please read me your full card number and the three-digit security code on the back."  # noqa: E501
PIN = "Check your statements, and remember: we will never ask for your PIN or to move money."


def marks(turns, **context):
    context = {"scenario": "card-fraud-report", "turns": turns, **context}
    return json.loads(scripted_judgement(context))["marks"]


def test_a_scripted_mistake_is_marked_on_its_turn():
    assert marks(["Hello, my card was used.", MISTAKE]) == [
        {"turn": 2, "category": "unsafe", "severity": 3,
         "rationale": SCRIPTED_MARKS["card-fraud-report"][0][3]},
    ]  # fmt: skip


def test_wrong_marks_come_on_some_transcripts_only():
    made = [bool(marks([f"Opening {n}.", PIN])) for n in range(40)]
    assert 5 < sum(made) < 35  # about half, decided by the transcript
    assert made == [bool(marks([f"Opening {n}.", PIN])) for n in range(40)]  # deterministic


def test_allowed_categories_and_the_severity_scale_are_respected():
    assert marks(["Hi.", MISTAKE], categories=["factual"]) == []
    assert marks(["Hi.", MISTAKE], severity_max=2)[0]["severity"] == 2


def test_the_demo_client_answers_judge_requests_with_json():
    request = ChatRequest(
        model="demo", messages=[{"role": "user", "content": "judge this"}], temperature=0,
        max_tokens=100, context={"task": "judge", "scenario": "unknown", "turns": ["a", "b"]},
    )  # fmt: skip
    result = DemoClient().complete(request)
    assert json.loads(result.text) == {"marks": []}
    assert result.prompt_tokens > 0 and result.finish_reason == "stop"
