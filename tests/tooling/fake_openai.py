"""A small OpenAI-compatible server for tests and benchmarks.

Serves `POST /v1/chat/completions` and `GET /v1/models` over HTTP/1.1 with keep-alive, on
asyncio, so hundreds of concurrent requests cost one thread. Replies are scripted (a callable,
or varied deterministic filler text by default); latency is configurable; faults are injected
at a rate or from a scripted sequence:

    429 (with Retry-After), 500, slow (past the client's timeout), drop (connection closed
    without an answer), malformed (invalid JSON), empty (empty content), length
    (finish_reason "length"), 401 (bad key).

Judge requests (review/judge/) have their own script, `judge_script`: see fake_judge.py.

Rate-limited mode (`rpm`, `tpm`): each API key gets a requests-per-minute and a
tokens-per-minute budget, token buckets refilled continuously that hold `burst_seconds` of the
budget (60: a whole minute, as OpenAI documents). A request is charged its prompt and
completion tokens (words here) when it arrives; one that does not fit is answered 429 with
`Retry-After` (the seconds until it would fit). Answers carry OpenAI's `x-ratelimit-limit-*`,
`x-ratelimit-remaining-*` and `x-ratelimit-reset-*` headers unless `rate_headers` is False.

In tests: `with FakeOpenAI(latency=0.01) as fake: ... fake.url ...` (see the `fake_openai`
fixture in tests/generation/conftest.py). Standalone, for the benchmark:

    python -m tests.tooling.fake_openai --port 8999 --latency 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .fake_judge import is_judge_request, judge_answer, next_judge
from .fake_ratelimits import KeyBudgets

FAULTS = ("429", "500", "slow", "drop", "malformed", "empty", "length", "401")

# fmt: off
_WORDS = [
    "angle", "circle", "ratio", "triangle", "proof", "identity", "radius", "sine", "cosine",
    "tangent", "graph", "period", "value", "card", "payment", "refund", "agent", "bank",
    "account", "statement", "merchant", "block", "verify", "limit", "branch", "pressure",
    "reading", "doctor", "salt", "exercise", "sleep", "tablet", "review", "dose", "week",
    "morning", "evening", "because", "therefore", "however", "perhaps", "clearly", "exactly",
    "usually", "rarely", "quickly", "carefully",
]
# fmt: on

Reply = Callable[[dict], str]


def default_reply(payload: dict, words: int = 24) -> str:
    """Varied, deterministic text: no two turns look alike, so loop detection stays quiet."""
    messages = payload.get("messages") or []
    seed = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def prompt_tokens_of(payload: dict) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))


@dataclass
class FakeState:
    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ("429", "500", "slow", "drop", "malformed", "empty", "length")
    script: list[str | None] = field(default_factory=list)  # consumed first; None = normal
    retry_after: float = 0.1
    slow_seconds: float = 5.0
    reply: Reply = default_reply
    seed: int = 0
    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    faults_served: dict[str, int] = field(default_factory=dict)
    payloads: list[dict] = field(default_factory=list)
    keep_payloads: int = 2000
    judge_script: list[str] = field(default_factory=list)  # consumed first; empty = "valid"
    judge_marks: list[dict] = field(default_factory=list)
    judge_requests: int = 0
    # Rate-limited mode (0: off), per API key.
    rpm: int = 0
    tpm: int = 0
    burst_seconds: float = 60.0
    rate_headers: bool = True
    rate_limited: int = 0  # 429s served because a budget was spent
    retry_after_seconds: float = 0.0  # their Retry-After, summed
    completed: int = 0
    tokens: int = 0


class FakeOpenAI:
    """Runs the server in a background thread with its own event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **state) -> None:
        self.host, self.port = host, port
        self.state = FakeState(**state)
        self._rng = random.Random(self.state.seed)
        self.budgets = KeyBudgets()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: OSError | None = None

    # -- control from tests --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def configure(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                if not hasattr(self.state, key):
                    raise AttributeError(key)
                setattr(self.state, key, value)

    def _budget(self, key: str, cost: int) -> tuple[float | None, dict[str, str]]:
        state = self.state
        if not (state.rpm or state.tpm):
            return None, {}
        wait, headers = self.budgets.charge(key, cost, rpm=state.rpm, tpm=state.tpm,
            burst_seconds=state.burst_seconds, headers=state.rate_headers)  # fmt: skip
        with self._lock:
            state.rate_limited += wait is not None
            state.retry_after_seconds += wait or 0.0
        return wait, headers

    def _next_fault(self) -> str | None:
        with self._lock:
            state = self.state
            state.requests += 1
            if state.script:
                fault = state.script.pop(0)
            elif state.fault_rate and self._rng.random() < state.fault_rate:
                fault = self._rng.choice(state.faults)
            else:
                fault = None
            if fault:
                state.faults_served[fault] = state.faults_served.get(fault, 0) + 1
            return fault

    def _next_judge(self, payload: dict) -> tuple[str | None, str | None]:
        with self._lock:
            return next_judge(self.state, payload)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop and self._server and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            with contextlib.suppress(Exception):  # best effort: the thread is a daemon anyway
                future.result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=2048)
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def serve_forever(self) -> None:
        if self._thread is None:
            self.start()
        assert self._thread is not None
        self._thread.join()

    # -- HTTP --------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _version = request_line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                key = headers.get("authorization", "").removeprefix("Bearer ").strip()
                keep = await self._respond(method, path.split("?")[0], body, writer, key)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:
            return  # shutting down; returning (not raising) keeps asyncio's callbacks quiet
        finally:
            writer.close()

    @staticmethod
    def _write(writer, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
        head = [
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    async def _respond(self, method: str, path: str, body: bytes, writer, key: str = "") -> bool:
        if method == "GET" and path == "/v1/models":
            data = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
            self._write(writer, 200, json.dumps(data).encode())
            await writer.drain()
            return True
        if path == "/_fake/stats":
            # Not part of the OpenAI API: lets a benchmark in another process check the peak
            # number of concurrent completions (POST resets the counters after reading them).
            with self._lock:
                data = {
                    "requests": self.state.requests,
                    "in_flight": self.state.in_flight,
                    "peak_in_flight": self.state.peak_in_flight,
                    "rate_limited": self.state.rate_limited,
                    "retry_after_seconds": self.state.retry_after_seconds,
                    "completed": self.state.completed,
                    "tokens": self.state.tokens,
                }
                if method == "POST":
                    self.state.peak_in_flight = self.state.in_flight
            self._write(writer, 200, json.dumps(data).encode())
            await writer.drain()
            return True
        if method != "POST" or path != "/v1/chat/completions":
            self._write(writer, 404, b'{"error": {"message": "not found"}}')
            await writer.drain()
            return True
        payload = json.loads(body or b"{}")
        state = self.state
        with self._lock:
            state.in_flight += 1
            state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
            if len(state.payloads) < state.keep_payloads:
                state.payloads.append(payload)
        try:
            if is_judge_request(payload):
                fault, answer = self._next_judge(payload)
                text = answer or judge_answer("valid", state.judge_marks)
            else:
                fault = self._next_fault()
                text = state.reply(payload) if fault is None or fault == "length" else ""
            cost = prompt_tokens_of(payload) + len(text.split())
            wait, limit_headers = self._budget(key, cost)
            if wait is not None:
                error = {"error": {"message": "Rate limit reached", "type": "requests"}}
                limit_headers["Retry-After"] = f"{wait:.3f}"
                self._write(writer, 429, json.dumps(error).encode(), limit_headers)
                await writer.drain()
                return True
            if fault == "slow":
                await asyncio.sleep(state.slow_seconds)
            elif state.latency:
                await asyncio.sleep(state.latency)
            return await self._answer(fault, payload, writer, text, limit_headers)
        finally:
            with self._lock:
                state.in_flight -= 1

    async def _answer(
        self, fault: str | None, payload: dict, writer, text: str, headers: dict[str, str]
    ) -> bool:
        state = self.state
        if fault == "drop":
            writer.transport.abort()
            return False
        if fault == "429":
            error = {"error": {"message": "Rate limit reached", "type": "rate_limit"}}
            self._write(
                writer, 429, json.dumps(error).encode(), {"Retry-After": str(state.retry_after)}
            )
        elif fault == "500":
            self._write(writer, 500, b'{"error": {"message": "internal error (injected)"}}')
        elif fault == "400":
            error = {"error": {"message": "response_format is not supported (injected)"}}
            self._write(writer, 400, json.dumps(error).encode())
        elif fault == "401":
            error = {
                "error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            }
            self._write(writer, 401, json.dumps(error).encode())
        elif fault == "malformed":
            self._write(writer, 200, b'{"id": "chatcmpl-x", "choices": [{"message": ')
        else:
            text = "" if fault == "empty" else text
            finish = "stop"
            if fault == "length":
                text, finish = text[: max(1, len(text) // 2)], "length"
            prompt_tokens = prompt_tokens_of(payload)
            data = {
                "id": f"chatcmpl-{time.monotonic_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": payload.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(text.split()),
                    "total_tokens": prompt_tokens + len(text.split()),
                },
            }
            with self._lock:
                state.completed += 1
                state.tokens += prompt_tokens + len(text.split())
            self._write(writer, 200, json.dumps(data).encode(), headers)
        await writer.drain()
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999, help="0: any free port (printed).")
    parser.add_argument("--latency", type=float, default=0.0, help="Seconds per reply.")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--faults", default="429,500,slow,drop,malformed,empty,length")
    parser.add_argument("--retry-after", type=float, default=0.1)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rpm", type=int, default=0, help="Requests per minute per key.")
    parser.add_argument("--tpm", type=int, default=0, help="Tokens per minute per key.")
    parser.add_argument("--burst-seconds", type=float, default=60.0)
    parser.add_argument("--no-rate-headers", action="store_true")
    parser.add_argument("--reply-words", type=int, default=24)
    args = parser.parse_args()
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    server = FakeOpenAI(
        host=args.host,
        port=args.port,
        latency=args.latency,
        fault_rate=args.fault_rate,
        faults=faults,
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
        seed=args.seed,
        rpm=args.rpm,
        tpm=args.tpm,
        burst_seconds=args.burst_seconds,
        rate_headers=not args.no_rate_headers,
        reply=functools.partial(default_reply, words=args.reply_words),
    )
    server.start()
    print(f"fake OpenAI server on {server.url} (latency {args.latency}s)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
