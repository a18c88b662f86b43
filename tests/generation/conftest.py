"""Generation fixtures: the fake OpenAI server, scenarios."""

from __future__ import annotations

import threading
from unittest import mock

import pytest

from tests.factories import ScenarioFactory
from tests.tooling.fake_openai import FakeOpenAI


@pytest.fixture
def fake_openai():
    with FakeOpenAI(latency=0.0, retry_after=0.01, slow_seconds=2.0) as server:
        yield server


@pytest.fixture
def openai_provider(settings, fake_openai):
    """Point the OpenAI provider at the fake server, with fast retries and a short timeout."""
    settings.OPENAI_BASE_URL = fake_openai.url
    settings.OPENAI_API_KEY = ""
    settings.SYNTHREVIEW_LLM_TIMEOUT = 1.0
    settings.SYNTHREVIEW_LLM_RETRY_BASE_SECONDS = 0.01
    settings.SYNTHREVIEW_LLM_RETRY_MAX_SECONDS = 0.05
    return fake_openai


@pytest.fixture
def scenario(db):
    return ScenarioFactory(min_turns=2, max_turns=4, end_marker="<END>")


class Sent(list):
    def __init__(self) -> None:
        super().__init__()
        self.countdowns: dict[int, float | None] = {}


@pytest.fixture
def sent(settings):
    """As with a broker: tasks are sent by name instead of run here. The dialogue ids sent, in
    order; `sent.countdowns`, each one's delay in seconds (None: at once).

    Requests are not gated unless the test sets a Redis CELERY_BROKER_URL."""
    from celery import current_app

    from generation.engine import dispatch

    settings.CELERY_BROKER_URL = ""
    ids = Sent()

    def send_task(name, args, queue, countdown):
        assert name == "generation.generate_dialogue"
        ids.append(args[0])
        ids.countdowns[args[0]] = countdown

    app = current_app._get_current_object()
    with (
        mock.patch.object(dispatch, "tasks_run_inline", return_value=False),
        mock.patch.object(app, "send_task", side_effect=send_task),
    ):
        yield ids


@pytest.fixture
def generation_held():
    """Without a broker, a launch from the browser generates on a thread of the web process.
    On SQLite's shared in-memory test database a statement that meets another connection's
    write fails at once ("database table is locked") where a database file would wait, so a
    test reading while the thread starts would fail by chance. This holds the thread before
    its first statement until the test sets the event it yields."""
    from generation.engine import dispatch

    go = threading.Event()
    run_inline = dispatch._run_inline

    def held(*args, **kwargs):
        assert go.wait(30), "the test never let the generation go"
        return run_inline(*args, **kwargs)

    with mock.patch.object(dispatch, "_run_inline", held):
        yield go
