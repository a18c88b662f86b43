from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from generation import services
from generation.models import Dialogue, GenerationRun, Scenario, Turn
from tests.factories import (
    DialogueFactory,
    RunFactory,
    ScenarioFactory,
    TurnFactory,
    dialogue_with_turns,
)


def launch(scenario, count=2, **kwargs):
    return services.run_launch(scenario=scenario, count=count, **kwargs)


def live_turns(dialogue):
    return list(dialogue.turns.filter(discarded_at__isnull=True).order_by("position"))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- launching ------------------------------------------------------------------------------------


def test_launch_generates_every_dialogue_inline_with_the_demo_provider(
    scenario, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=3)
    run.refresh_from_db()
    assert run.provider == "demo"
    assert run.status == GenerationRun.Status.FINISHED
    assert run.done_count == 3 and run.failed_count == 0
    assert run.started_at and run.finished_at
    assert run.prompt_tokens > 0 and run.completion_tokens > 0
    for dialogue in run.dialogues.all():
        turns = live_turns(dialogue)
        assert dialogue.status == Dialogue.Status.COMPLETE
        assert [t.position for t in turns] == list(range(len(turns)))
        assert 2 <= len(turns) <= 4
        assert all(t.model == "demo-scripted" for t in turns)
        assert turns[0].persona.opens  # the opener speaks first


def test_topics_cycle_in_order_or_are_sampled_reproducibly(db):
    scenario = ScenarioFactory(topics=["a", "b", "c"])
    assert services.scenario_pick_topics(scenario=scenario, count=5, seed=1) == [
        "a",
        "b",
        "c",
        "a",
        "b",
    ]
    scenario.topic_order = Scenario.TopicOrder.SAMPLED
    sampled = services.scenario_pick_topics(scenario=scenario, count=20, seed=7)
    assert sampled == services.scenario_pick_topics(scenario=scenario, count=20, seed=7)
    assert set(sampled) <= {"a", "b", "c"} and len(set(sampled)) > 1


def test_launch_refuses_a_scenario_without_two_personas(db):
    scenario = ScenarioFactory(personas=False)
    with pytest.raises(services.ScenarioNotReady, match="two personas"):
        launch(scenario)
    assert not GenerationRun.objects.exists()


def test_dispatch_keeps_at_most_max_in_flight(scenario):
    with mock.patch.object(services, "_enqueue") as enqueue:
        run = launch(scenario, count=5, max_in_flight=2)
        assert services.run_dispatch(run_id=run.pk) == 2
        assert services.run_dispatch(run_id=run.pk) == 0  # window full
        first = run.dialogues.filter(dispatched_at__isnull=False).order_by("index").first()
        first.status = Dialogue.Status.COMPLETE
        first.save()
        assert services.run_dispatch(run_id=run.pk) == 1
    enqueued = [pk for call in enqueue.call_args_list for pk in call.args[0]]
    assert len(enqueued) == 0  # enqueues wait for the commit
    assert run.dialogues.filter(dispatched_at__isnull=False).count() == 3


def test_gated_the_window_keeps_headroom_dialogues_beyond_the_request_slots(scenario, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"
    settings.SYNTHREVIEW_DIALOGUE_HEADROOM = 0.25
    assert services.run_window(max_in_flight=8) == 8  # tasks inline: no gate, no headroom
    with (
        mock.patch.object(services, "tasks_run_inline", return_value=False),
        mock.patch.object(services, "_enqueue"),
    ):
        assert services.requests_gated()
        assert services.run_window(max_in_flight=8) == 10
        assert services.run_window(max_in_flight=64) == 80
        assert services.run_window(max_in_flight=1) == 2  # rounded up
        run = launch(scenario, count=20, max_in_flight=8)
        assert services.run_dispatch(run_id=run.pk) == 10
        assert services.run_dispatch(run_id=run.pk) == 0
        settings.SYNTHREVIEW_DIALOGUE_HEADROOM = 0
        assert services.run_window(max_in_flight=8) == 8  # one dialogue per slot


class RecordingSlots:
    def __init__(self) -> None:
        self.events: list[str] = []

    def acquire(self, *, keep_waiting) -> str:
        self.events.append("acquire")
        return "slot"

    def release(self, holder: str) -> None:
        self.events.append("release")


def test_a_gated_dialogue_takes_a_request_slot_for_each_call(scenario, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"
    slots = RecordingSlots()
    with (
        mock.patch.object(services, "tasks_run_inline", return_value=False),
        mock.patch.object(services, "_enqueue"),
        mock.patch.object(services.gate, "request_gate", return_value=slots) as request_gate,
    ):
        run = launch(scenario, count=1, max_in_flight=3)
        dialogue = run.dialogues.get()
        services.dialogue_generate(dialogue_id=dialogue.pk)
    request_gate.assert_called_once_with(run_id=run.pk, limit=3)
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE
    assert slots.events == ["acquire", "release"] * dialogue.turns.count()


def test_a_rolled_back_launch_enqueues_nothing(scenario, django_capture_on_commit_callbacks):
    with (
        mock.patch.object(services, "_enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        launch(scenario, count=2)
        raise RuntimeError("abort")
    assert callbacks == []
    enqueue.assert_not_called()
    assert not GenerationRun.objects.exists()


# --- generation with the OpenAI client over HTTP -------------------------------------------------


def test_real_openai_client_over_http_against_the_fake_server(
    scenario, openai_provider, django_capture_on_commit_callbacks
):
    openai_provider.configure(script=["429", "500", None, "length"])
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=1)
    run.refresh_from_db()
    assert run.provider == "openai"
    assert run.status == GenerationRun.Status.FINISHED
    dialogue = run.dialogues.get()
    turns = live_turns(dialogue)
    assert len(turns) == 4  # the fake never writes the end marker: the turn cap stops it
    assert turns[0].retries == 2  # the 429 and the 500
    assert turns[1].warnings == [Turn.Warning.TRUNCATED] and turns[1].finish_reason == "length"
    assert turns[0].prompt_tokens > 0 and turns[0].model
    # The opener saw the templated opening instruction; the other persona saw turn 0 as user.
    payloads = openai_provider.state.payloads
    opener_first = payloads[0]["messages"]
    assert opener_first[0]["content"] == "You are a student learning trigonometry."
    assert opener_first[1] == {"role": "user", "content": f"Let's talk about {dialogue.topic}."}
    teacher_first = payloads[3]["messages"]
    assert teacher_first[0]["content"] == "You are a patient maths teacher."
    assert teacher_first[1] == {"role": "user", "content": turns[0].text}


def test_401_fails_the_dialogue_at_once_with_a_readable_reason(
    scenario, openai_provider, django_capture_on_commit_callbacks
):
    openai_provider.configure(fault_rate=1.0, faults=("401",))
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=2)
    run.refresh_from_db()
    assert openai_provider.state.requests == 2  # no retries
    assert run.status == GenerationRun.Status.FAILED
    assert run.failed_count == 2
    assert "HTTP 401" in run.error and "Incorrect API key" in run.error
    for dialogue in run.dialogues.all():
        assert dialogue.status == Dialogue.Status.FAILED
        assert dialogue.failure_reason.startswith("HTTP 401 from the LLM server")


def test_exhausted_retries_fail_with_the_last_error(
    scenario, openai_provider, settings, django_capture_on_commit_callbacks
):
    settings.SYNTHREVIEW_LLM_MAX_RETRIES = 2
    openai_provider.configure(script=["500", "500", "500"])
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=1)
    run.refresh_from_db()
    dialogue = run.dialogues.get()
    assert dialogue.status == Dialogue.Status.FAILED
    assert dialogue.failure_reason.startswith("gave up after 3 attempts: HTTP 500")
    assert run.status == GenerationRun.Status.FAILED


def test_model_and_temperature_overrides_reach_the_server(
    scenario, openai_provider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        launch(scenario, count=1, model_override="gpt-4o-mini", temperature_override=0.1)
    payload = openai_provider.state.payloads[0]
    assert payload["model"] == "gpt-4o-mini" and payload["temperature"] == 0.1
    run = GenerationRun.objects.get()
    assert run.cost_usd > 0  # priced model


def test_cost_uses_per_model_prices(settings):
    settings.SYNTHREVIEW_MODEL_PRICES = {"m": (1.0, 2.0)}
    assert services._cost("m", 1_000_000, 500_000) == Decimal("2.000000")
    assert services._cost("unpriced", 1_000_000, 1_000_000) == Decimal("0")


# --- leases, resume, idempotency -----------------------------------------------------------------


def test_lease_is_exclusive_until_it_expires(db):
    dialogue = DialogueFactory(status=Dialogue.Status.PENDING)
    assert services.dialogue_acquire_lease(dialogue_id=dialogue.pk, owner="elsewhere:1:1:a")
    assert not services.dialogue_acquire_lease(dialogue_id=dialogue.pk, owner="elsewhere:2:1:b")
    Dialogue.objects.filter(pk=dialogue.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.dialogue_acquire_lease(dialogue_id=dialogue.pk, owner="elsewhere:2:1:b")
    dialogue.refresh_from_db()
    assert dialogue.lease_owner == "elsewhere:2:1:b" and dialogue.attempts == 2


def test_a_dead_process_on_this_host_loses_its_lease_at_once(db):
    dialogue = DialogueFactory(status=Dialogue.Status.PENDING)
    dead_owner = f"{services.HOSTNAME}:{dead_pid()}:1:x"
    assert services.dialogue_acquire_lease(dialogue_id=dialogue.pk, owner=dead_owner)
    assert services.dialogue_acquire_lease(dialogue_id=dialogue.pk, owner="new:1:1:y")
    live_owner = f"{services.HOSTNAME}:{os.getppid()}:1:z"
    dialogue2 = DialogueFactory(status=Dialogue.Status.PENDING)
    assert services.dialogue_acquire_lease(dialogue_id=dialogue2.pk, owner=live_owner)
    assert not services.dialogue_acquire_lease(dialogue_id=dialogue2.pk, owner="new:1:1:y")


def test_finished_dialogues_are_not_generated_again(db):
    dialogue = dialogue_with_turns(3)
    run_id = services.dialogue_generate(dialogue_id=dialogue.pk)
    assert run_id == dialogue.run_id
    assert dialogue.turns.count() == 3


def test_rerunning_continues_from_the_last_saved_turn(scenario):
    run = RunFactory(scenario=scenario, requested_count=1)
    dialogue = DialogueFactory(
        run=run,
        status=Dialogue.Status.GENERATING,
        lease_owner="gone:1:1:x",
        lease_expires_at=timezone.now() - timedelta(minutes=5),
    )
    TurnFactory(dialogue=dialogue, position=0, original_text="Saved before the crash.")
    services.dialogue_generate(dialogue_id=dialogue.pk)
    dialogue.refresh_from_db()
    turns = live_turns(dialogue)
    assert turns[0].text == "Saved before the crash."
    assert [t.position for t in turns] == list(range(len(turns)))
    assert dialogue.status == Dialogue.Status.COMPLETE and dialogue.lease_owner == ""


def test_a_dialogue_cancelled_during_the_llm_call_saves_no_more_turns(scenario):
    run = RunFactory(scenario=scenario, requested_count=1, status=GenerationRun.Status.RUNNING)
    dialogue = DialogueFactory(run=run, status=Dialogue.Status.PENDING)
    demo = services.get_client("demo")

    class CancellingClient:
        provider = "demo"

        def complete(self, request):
            services.run_cancel(run=run)
            return demo.complete(request)

    with mock.patch.object(services, "get_client", return_value=CancellingClient()):
        services.dialogue_generate(dialogue_id=dialogue.pk)
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.CANCELLED
    assert dialogue.turns.count() == 0
    assert dialogue.lease_owner == ""


def test_usage_is_rolled_up_into_the_run_once(scenario, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=2)
    run.refresh_from_db()
    turns = Turn.objects.filter(dialogue__run=run)
    assert run.prompt_tokens == sum(t.prompt_tokens for t in turns) > 0
    assert run.completion_tokens == sum(t.completion_tokens for t in turns) > 0
    assert not Dialogue.objects.filter(pending_prompt_tokens__gt=0).exists()
    services._usage_rollup(dialogue_id=run.dialogues.first().pk)
    run.refresh_from_db()
    assert run.prompt_tokens == sum(t.prompt_tokens for t in turns)


# --- cancel, finalize ------------------------------------------------------------------------------


def test_cancel_keeps_finished_dialogues(scenario):
    run = RunFactory(scenario=scenario, requested_count=3, status=GenerationRun.Status.RUNNING)
    done = dialogue_with_turns(2, run=run, status=Dialogue.Status.COMPLETE)
    DialogueFactory(run=run, status=Dialogue.Status.PENDING)
    DialogueFactory(run=run, status=Dialogue.Status.GENERATING)
    assert services.run_cancel(run=run) == 2
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED and run.finished_at
    done.refresh_from_db()
    assert done.status == Dialogue.Status.COMPLETE and done.turns.count() == 2
    assert services.run_cancel(run=run) == 0  # idempotent


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["complete", "complete"], GenerationRun.Status.FINISHED),
        (["complete", "failed"], GenerationRun.Status.FINISHED_WITH_FAILURES),
        (["failed", "failed"], GenerationRun.Status.FAILED),
        (["complete", "generating"], None),
    ],
)
def test_finalize(scenario, statuses, expected):
    run = RunFactory(
        scenario=scenario, requested_count=len(statuses), status=GenerationRun.Status.RUNNING
    )
    for status in statuses:
        DialogueFactory(run=run, status=status, failure_reason="boom" if status == "failed" else "")
    assert services.run_finalize(run_id=run.pk) == expected
    run.refresh_from_db()
    assert run.status == (expected or GenerationRun.Status.RUNNING)
    assert services.run_finalize(run_id=run.pk) is None  # closes once


# --- regeneration -------------------------------------------------------------------------------------


def test_regenerate_from_discards_later_turns_and_continues_from_the_corrected_text(
    scenario, openai_provider, django_capture_on_commit_callbacks
):
    run = RunFactory(
        scenario=scenario,
        requested_count=1,
        provider="openai",
        status=GenerationRun.Status.FINISHED,
        done_count=1,
    )
    dialogue = dialogue_with_turns(4, run=run, counted_in_run=True)
    Turn.objects.filter(dialogue=dialogue, position=1).update(text="Corrected by the expert.")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        discarded = services.dialogue_regenerate_from(dialogue=dialogue, position=1)
        assert dialogue.status == Dialogue.Status.PENDING
    assert discarded == 2
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE
    turns = live_turns(dialogue)
    assert [t.position for t in turns] == [0, 1, 2, 3]
    assert turns[1].text == "Corrected by the expert."
    assert Turn.objects.filter(dialogue=dialogue, discarded_at__isnull=False).count() == 2
    # The student (position 2) answered the corrected turn, not the original one.
    assert openai_provider.state.payloads[0]["messages"][-1] == {
        "role": "user",
        "content": "Corrected by the expert.",
    }
    run.refresh_from_db()
    assert run.done_count == 1 and run.status == GenerationRun.Status.FINISHED


def test_regenerate_refuses_while_a_worker_holds_the_lease(db):
    dialogue = dialogue_with_turns(3, status=Dialogue.Status.GENERATING)
    Dialogue.objects.filter(pk=dialogue.pk).update(
        lease_owner="otherhost:1:1:x", lease_expires_at=timezone.now() + timedelta(seconds=30)
    )
    with (
        pytest.raises(services.GenerationBusy, match="being generated right now"),
        transaction.atomic(),
    ):
        services.dialogue_regenerate_from(dialogue=dialogue, position=0)
    assert dialogue.turns.filter(discarded_at__isnull=True).count() == 3


@pytest.mark.django_db(transaction=True)
def test_regenerate_requires_a_transaction():
    dialogue = dialogue_with_turns(2)
    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        services.dialogue_regenerate_from(dialogue=dialogue, position=0)


def test_regenerate_in_a_rolled_back_transaction_changes_and_enqueues_nothing(
    db, django_capture_on_commit_callbacks
):
    dialogue = dialogue_with_turns(3)
    with (
        mock.patch.object(services, "_enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.dialogue_regenerate_from(dialogue=dialogue, position=0)
        raise RuntimeError("abort")
    enqueue.assert_not_called()
    assert dialogue.turns.filter(discarded_at__isnull=True).count() == 3
    assert Dialogue.objects.get(pk=dialogue.pk).status == Dialogue.Status.COMPLETE


# --- sweep ------------------------------------------------------------------------------------------------


def test_sweep_requeues_expired_leases_once(scenario):
    run = RunFactory(scenario=scenario, requested_count=2, status=GenerationRun.Status.RUNNING)
    expired = DialogueFactory(
        run=run,
        status=Dialogue.Status.GENERATING,
        lease_owner="otherhost:1:1:x",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        dispatched_at=timezone.now(),
    )
    live = DialogueFactory(
        run=run,
        status=Dialogue.Status.GENERATING,
        lease_owner="otherhost:2:1:y",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
        dispatched_at=timezone.now(),
    )
    with mock.patch.object(services, "_enqueue") as enqueue:
        assert services.dialogues_sweep() == 1
        assert services.dialogues_sweep() == 0
    assert enqueue.call_args_list[0].args[0] == [expired.pk]
    expired.refresh_from_db()
    live.refresh_from_db()
    assert expired.status == Dialogue.Status.PENDING and expired.lease_owner == ""
    assert live.status == Dialogue.Status.GENERATING


def test_sweep_takes_over_at_once_from_a_dead_process_on_this_host(scenario):
    run = RunFactory(scenario=scenario, requested_count=1, status=GenerationRun.Status.RUNNING)
    dialogue = DialogueFactory(
        run=run,
        status=Dialogue.Status.GENERATING,
        lease_owner=f"{services.HOSTNAME}:{dead_pid()}:1:x",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )
    with mock.patch.object(services, "_enqueue") as enqueue:
        assert services.dialogues_sweep() == 1
    assert enqueue.call_args_list[0].args[0] == [dialogue.pk]


def test_sweep_requeues_dialogues_whose_task_never_started(scenario, settings):
    run = RunFactory(scenario=scenario, requested_count=1, status=GenerationRun.Status.RUNNING)
    old = timezone.now() - timedelta(seconds=settings.SYNTHREVIEW_DISPATCH_STALE_SECONDS + 1)
    dialogue = DialogueFactory(run=run, status=Dialogue.Status.PENDING, dispatched_at=old)
    with mock.patch.object(services, "_enqueue") as enqueue:
        assert services.dialogues_sweep() == 1
    assert enqueue.call_args_list[0].args[0] == [dialogue.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_counter_updates_are_never_lost_under_concurrency(scenario):
    run = RunFactory(scenario=scenario)

    def bump():
        try:
            for _ in range(25):
                GenerationRun.objects.filter(pk=run.pk).update(
                    prompt_tokens=F("prompt_tokens") + 3, done_count=F("done_count") + 1
                )
        finally:
            connection.close()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.refresh_from_db()
    assert run.done_count == 200 and run.prompt_tokens == 600


def test_an_outcome_is_counted_once_and_the_sweep_counts_what_a_crash_missed(scenario):
    run = RunFactory(scenario=scenario, requested_count=2, status=GenerationRun.Status.RUNNING)
    missed = DialogueFactory(
        run=run,
        status=Dialogue.Status.COMPLETE,
        finished_at=timezone.now() - timedelta(minutes=5),
        pending_prompt_tokens=10,
        pending_completion_tokens=5,
        pending_cost_usd=Decimal("0.5"),
    )
    DialogueFactory(run=run, status=Dialogue.Status.GENERATING, lease_owner="otherhost:1:1:x",
                    lease_expires_at=timezone.now() + timedelta(minutes=1))  # fmt: skip
    with mock.patch.object(services, "_enqueue"):
        services.dialogues_sweep()
        services.dialogues_sweep()
    services._usage_rollup(dialogue_id=missed.pk)
    run.refresh_from_db()
    missed.refresh_from_db()
    assert (run.done_count, run.failed_count) == (1, 0)
    assert (run.prompt_tokens, run.completion_tokens, run.cost_usd) == (10, 5, Decimal("0.5"))
    assert missed.counted_in_run and missed.pending_prompt_tokens == 0


# --- one-statement paths on PostgreSQL ----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_rollups_of_one_dialogue_count_it_once(scenario):
    run = RunFactory(scenario=scenario, status=GenerationRun.Status.RUNNING)
    dialogue = DialogueFactory(
        run=run,
        status=Dialogue.Status.COMPLETE,
        pending_prompt_tokens=7,
        pending_completion_tokens=3,
        pending_cost_usd=Decimal("0.25"),
    )
    start = threading.Barrier(8)

    def rollup():
        try:
            start.wait()
            services._usage_rollup(dialogue_id=dialogue.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=rollup) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.refresh_from_db()
    dialogue.refresh_from_db()
    assert (run.done_count, run.failed_count) == (1, 0)
    assert (run.prompt_tokens, run.completion_tokens, run.cost_usd) == (7, 3, Decimal("0.25"))
    assert dialogue.counted_in_run and dialogue.pending_prompt_tokens == 0


@pytest.mark.postgres
def test_a_turn_that_does_not_end_the_dialogue_costs_one_query(
    scenario, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    scenario.min_turns = scenario.max_turns = 4
    scenario.end_marker = ""
    scenario.save()
    run = RunFactory(scenario=scenario, requested_count=1)
    dialogue = DialogueFactory(run=run, scenario=scenario, status=Dialogue.Status.PENDING)
    # Lease 1, run status 1, loading 1, three continuing turns 1 each; the last turn's
    # transaction 7 (UPDATE, INSERT, finish, two savepoint pairs as the test runs inside a
    # transaction); the lease release 1 (a worker forgets the lease at commit, which the test
    # transaction delays); the roll-up 1.
    with (
        django_assert_max_num_queries(1 + 1 + 1 + 3 + 7 + 1 + 1),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.dialogue_generate(dialogue_id=dialogue.pk)
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE
    assert [t.position for t in live_turns(dialogue)] == [0, 1, 2, 3]
    assert all(t.version == 1 and t.discarded_at is None for t in live_turns(dialogue))
    run.refresh_from_db()
    assert run.done_count == 1
    assert run.prompt_tokens == sum(t.prompt_tokens for t in live_turns(dialogue)) > 0


def test_the_consumer_loop_is_woken_often_enough_to_see_a_freed_prefetch_slot():
    from generation import worker

    class Hub:
        def __init__(self):
            self.timers = []

        def call_repeatedly(self, delay, callback, *args):
            self.timers.append((delay, callback))

    class Consumer:
        hub = Hub()

    assert worker.consumer_wake_often(Consumer())
    [(delay, callback)] = Consumer.hub.timers
    assert 0 < delay <= 0.05
    callback()
    assert not worker.consumer_wake_often(object())  # no event loop (e.g. a solo pool)
