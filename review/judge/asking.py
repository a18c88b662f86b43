"""The judge's calls, through generation's LLM path (retries, the run's request slots).

The first call asks for structured output (a JSON-schema `response_format`). A server that
refuses the field is asked again without it; the prompt describes the same JSON either way. An
answer that cannot be read gets one re-ask, quoting the problem back to the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from generation.engine.usage import NO_USAGE, Usage
from generation.llm import ChatRequest, LLMClient, PermanentLLMError, complete_with_retries
from generation.llm.retry import RequestSlots, RetriesExhausted

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


def judge_ask(
    client: LLMClient, request: ChatRequest, *, parse: Parse, slots: RequestSlots | None
) -> JudgeAnswer:
    answer = JudgeAnswer(model=request.model)
    try:
        text, request = _call(client, request, answer, slots)
        try:
            answer.parsed = parse(text)
        except MalformedOutput as first:
            messages = [*request.messages, {"role": "assistant", "content": text}]
            messages.append(reask_message(str(first)))
            text, _ = _call(client, replace(request, messages=messages), answer, slots)
            try:
                answer.parsed = parse(text)
            except MalformedOutput as second:
                answer.error = f"unreadable answer after one re-ask: {second}"
    except PermanentLLMError as exc:
        answer.error = exc.reason
    return answer


def _call(
    client: LLMClient, request: ChatRequest, answer: JudgeAnswer, slots: RequestSlots | None
) -> tuple[str, ChatRequest]:
    """One answer's text and the request that got it; the usage goes to `answer`. Without
    structured output if the server refuses it (a permanent error that is not the retries
    running out), and then so is every later call of this pass."""
    answer.calls += 1
    try:
        outcome = complete_with_retries(client, request, slots=slots)
    except RetriesExhausted:
        raise
    except PermanentLLMError:
        if request.response_format is None:
            raise
        answer.calls += 1
        request = replace(request, response_format=None)
        outcome = complete_with_retries(client, request, slots=slots)
    result = outcome.result
    answer.model = result.model
    answer.usage += Usage.priced(
        model=result.model,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )
    return result.text, request
