"""Endpoints with real `celery worker` processes, PostgreSQL, Redis and fake OpenAI servers:
each persona's and the judge's calls reach their own server only; an endpoint's requests per
minute hold across two worker processes; a limited endpoint's first dialogues start spaced; a
missing key is refused before anything reaches a worker."""

from __future__ import annotations

import time

import pytest

from generation import selectors, services
from generation.models import Dialogue, Endpoint, GenerationRun, Persona
from review.models import JudgeConfig, Judgement
from tests.factories import ScenarioFactory
from tests.tooling.fake_openai import FakeOpenAI
from tests.tooling.workers import CeleryWorker, unique_queue

pytestmark = [
    pytest.mark.worker,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

WORKER_ENV = {
    "SYNTHREVIEW_LLM_TIMEOUT": "5",
    "SYNTHREVIEW_LLM_MAX_RETRIES": "8",
    "SYNTHREVIEW_LLM_RETRY_BASE_SECONDS": "0.05",
    "SYNTHREVIEW_LLM_RETRY_MAX_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def queue():
    return unique_queue("endpoints")


@pytest.fixture(scope="module")
def workers(django_db_setup, queue):
    """Two worker processes on one queue."""
    started = [
        CeleryWorker(queue=queue, pool="threads", concurrency=8, env=WORKER_ENV).start()
        for _ in range(2)
    ]
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture(autouse=True)
def on_queue(settings, queue):
    settings.CELERY_TASK_DEFAULT_QUEUE = queue


def wait_for_end(run: GenerationRun, timeout: float, workers) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status not in GenerationRun.ACTIVE_STATUSES:
            return
        time.sleep(0.1)
    logs = "\n".join(w.output()[-3000:] for w in workers)
    raise AssertionError(f"run #{run.pk} did not end in {timeout}s\n{logs}")


def scenario_on(first: Endpoint, second: Endpoint, turns: int):
    scenario = ScenarioFactory(min_turns=turns, max_turns=turns, end_marker="")
    Persona.objects.filter(scenario=scenario, position=0).update(endpoint=first)
    Persona.objects.filter(scenario=scenario, position=1).update(endpoint=second)
    return scenario


def test_each_persona_and_the_judge_reach_only_their_own_endpoint(workers):
    with FakeOpenAI(latency=0.02) as server_a, FakeOpenAI(latency=0.02) as server_b:
        a = Endpoint.objects.create(name="a", base_url=server_a.url, default_model="model-a")
        b = Endpoint.objects.create(name="b", base_url=server_b.url, default_model="model-b")
        scenario = scenario_on(a, b, turns=4)
        JudgeConfig.objects.create(
            scenario=scenario, endpoint=b, model="judge-model", rubric="Check it."
        )
        teacher, student = scenario.personas.order_by("position")
        run = services.run_launch(scenario=scenario, count=6, max_in_flight=4)
        wait_for_end(run, 60, workers)
        assert run.status == GenerationRun.Status.FINISHED
        assert run.dialogues.filter(status=Dialogue.Status.COMPLETE).count() == 6
        wait_for_judgements(run, 6, 30, workers)
        # The student opens: turns 0 and 2 are its own (server b), 1 and 3 the teacher's (a);
        # the judge (on b) reads each of the 6 dialogues once.
        log_a, log_b = server_a.state.payloads, server_b.state.payloads
        assert len(log_a) == 12 and len(log_b) == 12 + 6
        assert server_a.state.judge_requests == 0 and server_b.state.judge_requests == 6
        assert {p["model"] for p in log_a} == {"model-a"}
        assert {p["messages"][0]["content"] for p in log_a} == {teacher.system_prompt}
        students = [p for p in log_b if p["model"] == "model-b"]
        judges = [p for p in log_b if p["model"] == "judge-model"]
        assert len(students) == 12 and len(judges) == 6
        assert {p["messages"][0]["content"] for p in students} == {student.system_prompt}
        assert all("response_format" in p for p in judges)
        # The run page counts each endpoint's calls, the judge's on b.
        rows = {row.use.endpoint.name: row for row in selectors.run_endpoint_pacing(run=run)}
        assert rows["a"].pacing.requests_total == 12
        assert rows["b"].pacing.requests_total == 18
        assert rows["a"].use.callers == [("Teacher", "model-a")]
        assert rows["b"].use.callers == [("Student", "model-b"), ("Judge", "judge-model")]


def wait_for_judgements(run: GenerationRun, count: int, timeout: float, workers) -> None:
    deadline = time.monotonic() + timeout
    done = Judgement.objects.filter(dialogue__run=run, status=Judgement.Status.DONE)
    while time.monotonic() < deadline:
        if done.count() == count:
            return
        time.sleep(0.1)
    logs = "\n".join(w.output()[-3000:] for w in workers)
    raise AssertionError(f"{done.count()} of {count} judgements in {timeout}s\n{logs}")


def test_requests_per_minute_hold_across_two_worker_processes(workers):
    # 240 a minute, enforced per second (a bucket of 4), and no headers to learn from: only
    # the endpoint's own limit, shared by both workers through Redis, keeps the server happy.
    # The server enforces it per second; the pacing's buckets hold half a second, which leaves
    # slack for the milliseconds between a worker's turn and the request's arrival.
    with FakeOpenAI(latency=0.05, rpm=240, burst_seconds=1, rate_headers=False) as server:
        paced = Endpoint.objects.create(name="paced", base_url=server.url, requests_per_minute=240)
        scenario = scenario_on(paced, paced, turns=3)
        started = time.monotonic()
        run = services.run_launch(scenario=scenario, count=12, max_in_flight=12)
        wait_for_end(run, 90, workers)
        elapsed = time.monotonic() - started
        assert run.status == GenerationRun.Status.FINISHED
        assert server.state.completed == 36
        assert server.state.rate_limited == 0
        assert elapsed >= (36 - 2) / 4 - 0.5  # 2 at once, then 4 a second
        for worker in workers:  # both took part
            assert "succeeded" in worker.output()

        # Control: the same run on an endpoint without the limit meets 429s.
        server.budgets.reset()
        unpaced = Endpoint.objects.create(name="unpaced", base_url=server.url)
        run = services.run_launch(scenario=scenario_on(unpaced, unpaced, 3), count=12,
                                  max_in_flight=12)  # fmt: skip
        wait_for_end(run, 120, workers)
        assert server.state.rate_limited > 0
        print(f"\nunpaced control: {server.state.rate_limited} 429s; paced: 0 in {elapsed:.1f}s")


def test_a_limited_endpoints_first_dialogues_start_one_after_another(workers):
    # 240 requests a minute and two calls a dialogue: a dialogue every half second. The
    # pacing alone would start all eight within the first two seconds (four calls a second).
    with FakeOpenAI(latency=0.02, rpm=240, burst_seconds=1) as server:
        endpoint = Endpoint.objects.create(
            name="spaced", base_url=server.url, requests_per_minute=240
        )
        run = services.run_launch(
            scenario=scenario_on(endpoint, endpoint, turns=2), count=8, max_in_flight=8
        )
        wait_for_end(run, 60, workers)
        assert server.state.rate_limited == 0
    assert run.status == GenerationRun.Status.FINISHED
    dialogues = list(run.dialogues.order_by("index"))
    starts = [d.turns.get(position=0).created_at for d in dialogues]
    due = [d.dispatched_at for d in dialogues]
    assert [(moment - due[0]).total_seconds() for moment in due] == pytest.approx(
        [index * 0.5 for index in range(8)], abs=0.01
    )
    for started, due_at in zip(starts, due, strict=True):
        assert (started - due_at).total_seconds() > -0.05  # no task ran before it was due
    assert (starts[-1] - starts[0]).total_seconds() >= 7 * 0.5 - 0.1


def test_a_missing_key_is_refused_at_launch_before_any_worker_sees_it(workers, monkeypatch):
    monkeypatch.delenv("SYNTHREVIEW_TEST_ABSENT_KEY", raising=False)
    keyed = Endpoint.objects.create(
        name="keyed", base_url="http://127.0.0.1:9/v1", api_key_env="SYNTHREVIEW_TEST_ABSENT_KEY"
    )
    received = [w.output().count("received") for w in workers]
    with pytest.raises(services.EndpointNotReady, match="SYNTHREVIEW_TEST_ABSENT_KEY"):
        services.run_launch(scenario=scenario_on(keyed, keyed, 2), count=3)
    time.sleep(0.5)
    assert [w.output().count("received") for w in workers] == received
    assert not GenerationRun.objects.exists()
