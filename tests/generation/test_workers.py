"""Real `celery worker` processes against Redis, PostgreSQL and the fake OpenAI server.

These tests hold the engine to its promises: faults retried or failed with a reason, no
duplicate turns, a SIGKILLed pool child resumed within seconds, a dead worker's dialogues
resumed by another worker within two minutes, nothing enqueued from a rolled-back transaction,
cancel within seconds, 401 failing fast. Timings printed here feed docs/generation.md.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.db.models import Count, Q

from generation import services
from generation.models import Dialogue, GenerationRun, Turn
from tests.factories import ScenarioFactory, dialogue_with_turns
from tests.tooling.fake_openai import FakeOpenAI
from tests.tooling.workers import CeleryWorker, unique_queue

pytestmark = [
    pytest.mark.worker,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

ALL_FAULTS = ("429", "500", "slow", "drop", "malformed", "empty", "length")


def worker_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "",
        "SYNTHREVIEW_LLM_TIMEOUT": "1",
        "SYNTHREVIEW_LLM_MAX_RETRIES": "8",
        "SYNTHREVIEW_LLM_RETRY_BASE_SECONDS": "0.05",
        "SYNTHREVIEW_LLM_RETRY_MAX_SECONDS": "0.3",
        **extra,
    }


@pytest.fixture(scope="module")
def fake_server():
    with FakeOpenAI(latency=0.02, retry_after=0.05, slow_seconds=1.5) as server:
        yield server


@pytest.fixture(scope="module")
def queue():
    return unique_queue("gen")


@pytest.fixture(scope="module", params=["threads", "gevent"])
def pool_worker(request, django_db_setup, fake_server, queue):
    """A worker of each many-dialogue pool (threads, gevent), shared by the tests that do not kill it.

    gevent gets more greenlets than threads: idle ones cost nothing, and a consumer whose
    prefetch slots are all taken sleeps up to a second before it looks again.
    """
    concurrency = 32 if request.param == "gevent" else 16
    worker = CeleryWorker(
        queue=queue,
        pool=request.param,
        concurrency=concurrency,
        env=worker_env(fake_server),
    )
    with worker:
        yield worker


@pytest.fixture
def fake(fake_server):
    fake_server.configure(
        latency=0.02, fault_rate=0.0, faults=ALL_FAULTS, script=[], requests=0, faults_served={}
    )
    return fake_server


@pytest.fixture(autouse=True)
def provider(settings, fake_server, queue):
    settings.OPENAI_BASE_URL = fake_server.url
    settings.OPENAI_API_KEY = ""
    settings.CELERY_TASK_DEFAULT_QUEUE = queue


def wait_for(
    condition: Callable[[], object], timeout: float, *workers: CeleryWorker, what: str = ""
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(w.output()[-4000:] for w in workers)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


def received(output: str) -> int:
    """Dialogue tasks a worker received (review's follow-up tasks run on the same queue)."""
    return sum(
        "generation.generate_dialogue[" in line and "received" in line
        for line in output.splitlines()
    )


def run_ended(run: GenerationRun) -> bool:
    run.refresh_from_db()
    return run.status not in GenerationRun.ACTIVE_STATUSES


def quiet(run: GenerationRun) -> bool:
    return not run.dialogues.filter(status=Dialogue.Status.GENERATING).exists()


def assert_no_duplicate_turns(run: GenerationRun) -> None:
    duplicates = (
        Turn.objects.filter(dialogue__run=run, discarded_at__isnull=True)
        .values("dialogue", "position")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not duplicates.exists()
    for dialogue in run.dialogues.all():
        positions = list(
            dialogue.turns.filter(discarded_at__isnull=True)
            .order_by("position")
            .values_list("position", flat=True)
        )
        assert positions == list(range(len(positions))), (dialogue.pk, positions)


def test_twenty_dialogues_with_injected_faults(pool_worker, fake):
    fake.configure(fault_rate=0.2)
    scenario = ScenarioFactory(min_turns=2, max_turns=4)
    run = services.run_launch(scenario=scenario, count=20, max_in_flight=8)
    wait_for(lambda: run_ended(run), 120, pool_worker, what="the run to end")
    assert run.dialogues.count() == 20
    for dialogue in run.dialogues.all():
        assert dialogue.status in (Dialogue.Status.COMPLETE, Dialogue.Status.FAILED)
        if dialogue.status == Dialogue.Status.FAILED:
            assert dialogue.failure_reason
        else:
            assert dialogue.stop_reason
    assert run.done_count + run.failed_count == 20
    assert run.status in (
        GenerationRun.Status.FINISHED,
        GenerationRun.Status.FINISHED_WITH_FAILURES,
    )
    assert_no_duplicate_turns(run)
    served = sum(fake.state.faults_served.values())
    assert served >= 5, fake.state.faults_served
    # Faults that produce output are kept and marked, not dropped.
    if fake.state.faults_served.get("length"):
        assert Turn.objects.filter(dialogue__run=run, finish_reason="length").exists()
    assert Turn.objects.filter(dialogue__run=run, retries__gt=0).exists()
    print(
        f"\nfault run: {run.done_count} complete, {run.failed_count} failed, faults {fake.state.faults_served}"
    )


def test_requests_in_flight_stay_within_max_in_flight_while_more_dialogues_are_open(
    pool_worker, fake
):
    # A timed-out request of an earlier test stays in the server's count until it ends.
    wait_for(lambda: fake.state.in_flight == 0, 10, what="the server to be idle")
    fake.configure(latency=0.2, peak_in_flight=0)
    window = services.run_window(max_in_flight=6)
    assert window > 6
    scenario = ScenarioFactory(min_turns=4, max_turns=4)
    run = services.run_launch(scenario=scenario, count=24, max_in_flight=6)
    most_open = 0
    deadline = time.monotonic() + 60
    while not run_ended(run) and time.monotonic() < deadline:
        most_open = max(most_open, run.dialogues.filter(status=Dialogue.Status.GENERATING).count())
        time.sleep(0.05)
    assert run.status == GenerationRun.Status.FINISHED, pool_worker.output()[-4000:]
    assert all(d.turns.count() == 4 for d in run.dialogues.all())
    # More dialogues open than request slots (the window's headroom), never more than the
    # window: a dialogue hands its slot over as it ends, to two over the run's last
    # `max_in_flight` dialogues (the window grows by at most that much).
    assert 6 < most_open <= window + 6
    assert fake.state.peak_in_flight == 6  # reached, never exceeded
    print(f"\nrequest gate: {most_open} dialogues open, at most 6 requests in flight")


def test_a_task_enqueued_in_a_rolled_back_transaction_never_runs(pool_worker, fake):
    committed = dialogue_with_turns(2)
    received_before = received(pool_worker.output())
    runs_before = GenerationRun.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.run_launch(scenario=ScenarioFactory(), count=3)
        services.dialogue_regenerate_from(dialogue=committed, position=0)
        raise RuntimeError("roll back")
    # Control: a committed launch is received, so the check below can see a leak.
    run = services.run_launch(scenario=ScenarioFactory(min_turns=2, max_turns=2), count=1)
    wait_for(lambda: run_ended(run), 30, pool_worker, what="the control run")
    time.sleep(1.0)
    assert received(pool_worker.output()) - received_before == 1
    assert GenerationRun.objects.count() == runs_before + 1
    assert committed.turns.filter(discarded_at__isnull=True).count() == 2


def test_cancel_mid_run_stops_within_seconds(pool_worker, fake):
    fake.configure(latency=0.25)
    scenario = ScenarioFactory(min_turns=6, max_turns=6)
    run = services.run_launch(scenario=scenario, count=12, max_in_flight=4)
    wait_for(lambda: run.dialogues.filter(status=Dialogue.Status.COMPLETE).count() >= 2, 60,
             pool_worker, what="two finished dialogues")  # fmt: skip
    finished = {
        d.pk: d.turns.count() for d in run.dialogues.filter(status=Dialogue.Status.COMPLETE)
    }
    started = time.monotonic()
    services.run_cancel(run=run)
    wait_for(lambda: quiet(run) and fake.state.in_flight == 0, 10, pool_worker,
             what="generation to stop")  # fmt: skip
    stopped_after = time.monotonic() - started
    requests = fake.state.requests
    time.sleep(1.5)
    assert fake.state.requests == requests, "requests after cancel"
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED
    for pk, count in finished.items():
        dialogue = Dialogue.objects.get(pk=pk)
        assert dialogue.status == Dialogue.Status.COMPLETE and dialogue.turns.count() == count
    assert run.dialogues.filter(status=Dialogue.Status.CANCELLED).exists()
    assert not run.dialogues.filter(status__in=services.OPEN_STATUSES).exists()
    assert_no_duplicate_turns(run)
    assert stopped_after < 5
    print(f"\ncancel: generation stopped {stopped_after:.2f}s after cancel")


def test_401_fails_fast_with_a_clear_reason(pool_worker, fake):
    fake.configure(fault_rate=1.0, faults=("401",))
    started = time.monotonic()
    run = services.run_launch(scenario=ScenarioFactory(), count=3)
    wait_for(lambda: run_ended(run), 20, pool_worker, what="the run to fail")
    elapsed = time.monotonic() - started
    assert fake.state.requests == 3  # one call each, no retries
    assert run.status == GenerationRun.Status.FAILED
    assert run.failed_count == 3
    assert "HTTP 401" in run.error
    assert set(run.dialogues.values_list("failure_reason", flat=True)) == {
        "HTTP 401 from the LLM server: Incorrect API key provided"
    }
    assert elapsed < 5


def test_a_hundred_dialogues_finishing_together_are_each_acknowledged_once(fake, queue, settings):
    # A hundred greenlets finish within milliseconds of each other, so their acks (each a
    # Redis round trip, concurrent under gevent) and hand-overs overlap.
    fake.configure(latency=0.2)
    together_queue = queue + "-together"
    with CeleryWorker(
        queue=together_queue, pool="gevent", concurrency=128, env=worker_env(fake)
    ) as worker:
        settings.CELERY_TASK_DEFAULT_QUEUE = together_queue
        scenario = ScenarioFactory(min_turns=2, max_turns=2)
        run = services.run_launch(scenario=scenario, count=200, max_in_flight=100)
        wait_for(lambda: run_ended(run), 90, worker, what="the run to end")
        output = worker.output()
    assert run.status == GenerationRun.Status.FINISHED
    assert fake.state.requests == 200 * 2  # no dialogue generated twice
    assert "Couldn't ack" not in output and "Too many connections" not in output, output[-3000:]
    assert received(output) == 200


def test_sigkill_of_a_prefork_child_resumes_within_seconds(fake, queue):
    fake.configure(latency=0.3)
    child_queue = queue + "-prefork"
    with CeleryWorker(
        queue=child_queue, pool="prefork", concurrency=2, env=worker_env(fake)
    ) as worker:
        from django.conf import settings

        settings.CELERY_TASK_DEFAULT_QUEUE = child_queue
        run = services.run_launch(scenario=ScenarioFactory(min_turns=6, max_turns=6), count=4)
        victim = wait_for(
            lambda: (
                run.dialogues.filter(status=Dialogue.Status.GENERATING)
                .annotate(n=Count("turns"))
                .filter(n__gte=2)
                .first()
            ),
            30,
            worker,
            what="a dialogue in progress",
        )
        pid = int(victim.lease_owner.split(":")[1])
        assert pid in worker.children()
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: Dialogue.objects.get(pk=victim.pk).attempts >= 2, 30, worker,
                 what="the dialogue to be taken over")  # fmt: skip
        resumed_after = time.monotonic() - killed_at
        wait_for(lambda: run_ended(run), 60, worker, what="the run to end")
        assert run.status == GenerationRun.Status.FINISHED
        assert all(d.turns.count() == 6 for d in run.dialogues.all())
        assert_no_duplicate_turns(run)
        assert resumed_after < 10
        print(f"\nprefork child SIGKILL: dialogue resumed {resumed_after:.2f}s after the kill")


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_sigkill_of_a_whole_worker_resumes_on_another_within_two_minutes(fake, queue, pool):
    """Worker A plays another machine, so its pid cannot be checked: only lease expiry and
    the sweep bring its dialogues back (default lease and sweep settings)."""
    fake.configure(latency=0.3)
    kill_queue = f"{queue}-kill-{pool}"
    from django.conf import settings

    settings.CELERY_TASK_DEFAULT_QUEUE = kill_queue
    env = worker_env(fake)
    worker_a = CeleryWorker(queue=kill_queue, pool=pool, concurrency=8, name="a",
                            env={**env, "SYNTHREVIEW_WORKER_HOSTNAME": "machine-a"})  # fmt: skip
    worker_b = CeleryWorker(queue=kill_queue, pool=pool, concurrency=8, name="b",
                            env={**env, "SYNTHREVIEW_WORKER_HOSTNAME": "machine-b"})  # fmt: skip
    try:
        worker_a.start()
        run = services.run_launch(scenario=ScenarioFactory(min_turns=8, max_turns=8), count=4)
        wait_for(lambda: Turn.objects.filter(dialogue__run=run).count() >= 6, 30, worker_a,
                 what="turns from worker A")  # fmt: skip
        worker_a.kill()
        killed_at = time.monotonic()
        stranded = {
            d.pk: d.turns.count() for d in run.dialogues.filter(status=Dialogue.Status.GENERATING)
        }
        assert stranded, "worker A held no dialogue when killed"
        worker_b.start()
        connection.close()

        def resumed() -> bool:
            return all(
                Dialogue.objects.get(pk=pk).turns.count() > count for pk, count in stranded.items()
            )

        wait_for(resumed, 130, worker_b, what="worker B to resume A's dialogues")
        resumed_after = time.monotonic() - killed_at
        wait_for(lambda: run_ended(run), 60, worker_b, what="the run to end")
        assert run.status == GenerationRun.Status.FINISHED
        assert all(d.turns.count() == 8 for d in run.dialogues.all())
        assert_no_duplicate_turns(run)
        assert resumed_after < 120
        owners = set(
            run.dialogues.filter(Q(pk__in=list(stranded))).values_list("attempts", flat=True)
        )
        assert min(owners) >= 2
        print(
            f"\nwhole {pool} worker SIGKILL: stranded dialogues resumed {resumed_after:.1f}s "
            "after the kill"
        )
    finally:
        worker_a.stop()
        worker_b.stop()
