from __future__ import annotations

import random

import pytest

from generation.llm import (
    ChatRequest,
    ChatResult,
    PermanentLLMError,
    RetryPolicy,
    TransientLLMError,
)
from generation.llm.demo import DEMO_MODEL, DemoClient
from generation.llm.openai_client import OpenAIClient
from generation.llm.retry import Aborted, RetriesExhausted, complete_with_retries

REQUEST = ChatRequest(
    model="m", messages=[{"role": "user", "content": "hi"}], temperature=0.5, max_tokens=50
)
OK = ChatResult(
    text="fine", model="m", prompt_tokens=3, completion_tokens=1, finish_reason="stop", latency_ms=5
)
POLICY = RetryPolicy(max_retries=3, base_seconds=1.0, max_seconds=8.0)


class ScriptedClient:
    provider = "test"

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def complete(self, request):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_transient_errors_are_retried_with_growing_jittered_backoff():
    client = ScriptedClient(TransientLLMError("500"), TransientLLMError("timeout"), OK)
    sleeps: list[float] = []
    outcome = complete_with_retries(
        client, REQUEST, policy=POLICY, sleep=sleeps.append, rng=random.Random(1)
    )
    assert outcome.result == OK
    assert outcome.retries == 2
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 2.0


def test_retry_after_is_always_honoured_in_full():
    client = ScriptedClient(
        TransientLLMError("429", retry_after=5.0), TransientLLMError("429", retry_after=120), OK
    )
    sleeps: list[float] = []
    complete_with_retries(client, REQUEST, policy=POLICY, sleep=sleeps.append)
    assert sleeps[0] >= 5.0
    assert sleeps[1] == 120.0  # longer than max_seconds: the server said when


def test_a_retry_after_beyond_ten_minutes_fails_the_call_instead_of_parking_a_worker():
    client = ScriptedClient(TransientLLMError("HTTP 429", retry_after=3600), OK)
    sleeps: list[float] = []
    with pytest.raises(RetriesExhausted, match="asked to wait 3600 s"):
        complete_with_retries(client, REQUEST, policy=POLICY, sleep=sleeps.append)
    assert sleeps == [] and client.calls == 1


def test_retries_are_bounded():
    client = ScriptedClient(*[TransientLLMError("HTTP 500") for _ in range(4)])
    with pytest.raises(RetriesExhausted, match="gave up after 4 attempts: HTTP 500"):
        complete_with_retries(client, REQUEST, policy=POLICY, sleep=lambda s: None)
    assert client.calls == 4


def test_an_empty_reply_is_retried_like_a_5xx():
    empty = ChatResult(text=" \n", model="m", prompt_tokens=5, completion_tokens=0,
                       finish_reason="stop")  # fmt: skip
    client = ScriptedClient(empty, OK)
    outcome = complete_with_retries(client, REQUEST, policy=POLICY, sleep=lambda s: None)
    assert outcome.result == OK and outcome.retries == 1
    client = ScriptedClient(*[empty] * 4)
    with pytest.raises(RetriesExhausted, match="gave up after 4 attempts: empty reply"):
        complete_with_retries(client, REQUEST, policy=POLICY, sleep=lambda s: None)


def test_permanent_errors_are_not_retried():
    client = ScriptedClient(PermanentLLMError("HTTP 401"), OK)
    with pytest.raises(PermanentLLMError):
        complete_with_retries(client, REQUEST, policy=POLICY, sleep=lambda s: None)
    assert client.calls == 1


def test_before_attempt_false_aborts_before_calling():
    client = ScriptedClient(TransientLLMError("500"), OK)
    answers = iter([True, False])
    with pytest.raises(Aborted):
        complete_with_retries(
            client,
            REQUEST,
            policy=POLICY,
            sleep=lambda s: None,
            before_attempt=lambda: next(answers),
        )
    assert client.calls == 1


class RecordingSlots:
    def __init__(self, events: list[str], *, grant: bool = True) -> None:
        self.events, self.grant = events, grant

    def acquire(self, *, keep_waiting) -> str | None:
        self.events.append("acquire")
        if self.grant:
            return "slot"
        while keep_waiting():  # no slot comes free: wait until told to stop
            self.events.append("still waiting")
        return None

    def release(self, holder: str) -> None:
        self.events.append("release")


def test_a_slot_is_held_for_each_attempt_and_never_while_backing_off():
    events: list[str] = []
    client = ScriptedClient(TransientLLMError("500"), OK)
    outcome = complete_with_retries(
        client,
        REQUEST,
        policy=POLICY,
        slots=RecordingSlots(events),
        sleep=lambda s: events.append("backoff"),
    )
    assert outcome.result == OK
    assert events == ["acquire", "release", "backoff", "acquire", "release"]


def test_a_stop_while_waiting_for_a_slot_aborts_without_calling():
    events: list[str] = []
    answers = iter([True, True, False])  # before the attempt, then while waiting
    client = ScriptedClient(OK)
    with pytest.raises(Aborted):
        complete_with_retries(
            client,
            REQUEST,
            policy=POLICY,
            slots=RecordingSlots(events, grant=False),
            before_attempt=lambda: next(answers),
        )
    assert events == ["acquire", "still waiting"]
    assert client.calls == 0


def _demo(position, *, slug="trig-tutoring", topic="the unit circle", variant=0):
    request = ChatRequest(
        model="x",
        messages=[{"role": "user", "content": "hello"}],
        temperature=0.7,
        max_tokens=100,
        context={
            "scenario": slug,
            "topic": topic,
            "position": position,
            "variant": variant,
            "end_marker": "<END>",
        },
    )
    return DemoClient().complete(request)


def test_demo_provider_is_deterministic_and_labelled():
    first, again = _demo(0), _demo(0)
    assert first == again
    assert first.model == DEMO_MODEL
    assert "the unit circle" in first.text
    assert "$" in _demo(1).text  # LaTeX for the review screen to render


def test_demo_provider_ships_deliberate_mistakes():
    teacher_answers = {_demo(3, variant=v).text for v in range(40)}
    assert any("\\sin 30^\\circ = \\frac{\\sqrt{3}}{2}" in t for t in teacher_answers)
    assert any("\\sin 30^\\circ = \\frac{1}{2}" in t for t in teacher_answers)


def test_demo_provider_continues_past_its_script():
    beyond = _demo(40)
    assert beyond.text.endswith("<END>")
    generic = _demo(0, slug="someone-elses-scenario", topic="tax returns")
    assert "tax returns" in generic.text


def test_openai_client_maps_http_faults(fake_openai):
    client = OpenAIClient(base_url=fake_openai.url, api_key="", timeout=1.0)
    assert client.complete(REQUEST).finish_reason == "stop"
    expectations = {
        "429": TransientLLMError,
        "500": TransientLLMError,
        "slow": TransientLLMError,
        "drop": TransientLLMError,
        "malformed": TransientLLMError,
        "401": PermanentLLMError,
    }
    for fault, error in expectations.items():
        fake_openai.configure(script=[fault])
        with pytest.raises(error) as info:
            client.complete(REQUEST)
        if fault == "429":
            assert info.value.retry_after == pytest.approx(0.01)
        if fault == "401":
            assert "401" in info.value.reason and "Incorrect API key" in info.value.reason
    fake_openai.configure(script=["empty"])
    assert client.complete(REQUEST).text == ""  # the retry loop, not the client, retries it
    fake_openai.configure(script=["length"])
    assert client.complete(REQUEST).finish_reason == "length"
