"""The judge's calls, through generation's LLM path: `endpoint_complete` on the judge's
endpoint (paced to its limits, retried, priced, counted on the run's page) inside the run's
request slots.

The first call asks for structured output (a JSON-schema `response_format`). A server that
refuses the field is asked again without it; the prompt describes the same JSON either way. An
answer that cannot be read gets one re-ask, quoting the problem back to the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from generation.engine.endpoints import EndpointOutcome, endpoint_complete
from generation.engine.usage import NO_USAGE, Usage
from generation.llm import ChatRequest, PermanentLLMError
from generation.llm.retry import RequestSlots, RetriesExhausted
from generation.models import Endpoint, GenerationRun

from .parsing import MalformedOutput, ParsedMarks
from .prompt import reask_message

Parse = Callable[[str], ParsedMarks]


@dataclass
class JudgeAnswer:
    """The marks, or why there are none (`error`), and what the calls cost."""

    parsed: ParsedMarks | None = None
    error: str = ""
    usage: Usage = NO_USAGE
    calls: int = 0
    model: str = ""


@dataclass(frozen=True)
class Target:
    """Where a pass's calls go: the judge's endpoint, the run they count in, its slots."""

    endpoint: Endpoint
    run: GenerationRun
    slots: RequestSlots | None


def judge_ask(target: Target, request: ChatRequest, *, parse: Parse) -> JudgeAnswer:
    answer = JudgeAnswer(model=request.model)
    try:
        text, request = _call(target, request, answer)
        try:
            answer.parsed = parse(text)
        except MalformedOutput as first:
            messages = [*request.messages, {"role": "assistant", "content": text}]
            messages.append(reask_message(str(first)))
            text, _ = _call(target, replace(request, messages=messages), answer)
            try:
                answer.parsed = parse(text)
            except MalformedOutput as second:
                answer.error = f"unreadable answer after one re-ask: {second}"
    except PermanentLLMError as exc:
        answer.error = exc.reason
    return answer


def _call(target: Target, request: ChatRequest, answer: JudgeAnswer) -> tuple[str, ChatRequest]:
    """One answer's text and the request that got it; the usage goes to `answer`. Without
    structured output if the server refuses it (a permanent error that is not the retries
    running out), and then so is every later call of this pass."""
    answer.calls += 1
    try:
        outcome = _complete(target, request)
    except RetriesExhausted:
        raise
    except PermanentLLMError:
        if request.response_format is None:
            raise
        answer.calls += 1
        request = replace(request, response_format=None)
        outcome = _complete(target, request)
    answer.model = outcome.result.model
    answer.usage += outcome.usage
    return outcome.result.text, request


def _complete(target: Target, request: ChatRequest) -> EndpointOutcome:
    return endpoint_complete(
        endpoint=target.endpoint, request=request, run=target.run, slots=target.slots
    )
