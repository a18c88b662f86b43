"""The official `openai` SDK against any OpenAI-compatible server (OpenAI, vLLM, Ollama...)."""

from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import replace

import httpx2
import openai

from .base import ChatRequest, ChatResult, PermanentLLMError, TransientLLMError
from .ratelimits import parse_rate_limits
from .transport import PoolTransport

# Local servers (vLLM, Ollama, llama.cpp) accept any key, but the SDK refuses to start without one.
PLACEHOLDER_KEY = "no-key-needed"

# The SDK's own connection limits (its default client's).
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=5.0)

# Status codes that a retry cannot fix: the request or the credentials are wrong.
PERMANENT_STATUSES = {400, 401, 403, 404, 405, 413, 415, 422}


def _retry_after(headers) -> float | None:
    if headers is None:
        return None
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            return max(0.0, float(raw) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _describe_status(exc: openai.APIStatusError) -> str:
    message = ""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = str(error.get("message") or "")
        elif isinstance(error, str):
            message = error
    message = message or str(exc.message or "")
    return f"HTTP {exc.status_code} from the LLM server: {message[:500]}".rstrip(": ")


class OpenAIClient:
    provider = "openai"

    def __init__(self, *, base_url: str | None, api_key: str | None, timeout: float) -> None:
        # One SDK client (one httpx connection pool) shared by every thread of the worker.
        self._client = openai.OpenAI(
            base_url=base_url or None,
            api_key=api_key or PLACEHOLDER_KEY,
            timeout=timeout,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=PoolTransport(limits=LIMITS)),
        )

    def complete(self, request: ChatRequest) -> ChatResult:
        body = {
            "model": request.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.response_format is not None:
            body["response_format"] = request.response_format
        try:
            # The SDK's documented raw request (`client.post(..., cast_to=httpx2.Response)`):
            # same client, auth, timeouts and error classes as `chat.completions.create`, but
            # without its per-call TypedDict transform and pydantic parsing, which cost more CPU
            # than everything else in a turn and cap how many calls one worker keeps in flight.
            response = self._client.post("/chat/completions", cast_to=httpx2.Response, body=body)
            payload = response.json()
        except openai.APITimeoutError as exc:
            raise TransientLLMError(f"timed out: {exc}") from exc
        except openai.APIConnectionError as exc:
            raise TransientLLMError(f"connection error: {exc.__cause__ or exc}") from exc
        except openai.APIStatusError as exc:
            reason = _describe_status(exc)
            headers = exc.response.headers
            status, limits = exc.status_code, parse_rate_limits(headers)
            if status in PERMANENT_STATUSES:
                raise PermanentLLMError(reason, status=status, rate_limits=limits) from exc
            raise TransientLLMError(
                reason, retry_after=_retry_after(headers), status=status, rate_limits=limits
            ) from exc
        except (openai.APIResponseValidationError, ValueError) as exc:
            raise TransientLLMError(f"malformed response: {exc}"[:500]) from exc
        result = _to_result(payload, request.model)
        return replace(result, rate_limits=parse_rate_limits(response.headers))

    def list_models(self) -> list[str]:
        """The ids `GET /models` lists (the admin's endpoint test); LLMError says why not."""
        try:
            page = self._client.models.list()
            return sorted(str(model.id) for model in page.data)
        except openai.APIStatusError as exc:
            raise PermanentLLMError(_describe_status(exc), status=exc.status_code) from exc
        except openai.APIConnectionError as exc:
            raise TransientLLMError(f"connection error: {exc.__cause__ or exc}") from exc
        except (openai.APIResponseValidationError, ValueError, TypeError) as exc:
            raise TransientLLMError(f"malformed response: {exc}"[:500]) from exc


def _to_result(payload: object, requested_model: str) -> ChatResult:
    """A chat completion body -> ChatResult; anything unexpected is a malformed response."""
    try:
        choice = payload["choices"][0]  # type: ignore[index]
        message = choice["message"]
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TypeError("content is not a string")
        usage = payload.get("usage") or {}  # type: ignore[union-attr]
        return ChatResult(
            text=content,
            model=str(payload.get("model") or requested_model),  # type: ignore[union-attr]
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=str(choice.get("finish_reason") or ""),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise TransientLLMError(f"malformed response: no usable choice ({exc})") from exc


_clients: dict[tuple[str, str, float], OpenAIClient] = {}
_clients_lock = threading.Lock()


def shared_client(*, base_url: str, api_key: str, timeout: float) -> OpenAIClient:
    key = (base_url, api_key, timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = OpenAIClient(
                base_url=base_url, api_key=api_key, timeout=timeout
            )
        return client
