from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
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
def test_a_four_turn_dialogue_costs_nine_queries(
    scenario, django_assert_num_queries, django_capture_on_commit_callbacks
):
    scenario.min_turns = scenario.max_turns = 4
    scenario.end_marker = ""
    scenario.save()
    run = RunFactory(scenario=scenario, requested_count=1)
    dialogue = DialogueFactory(run=run, scenario=scenario, status=Dialogue.Status.PENDING)
    # Lease 1, run status 1, loading 1, three continuing turns 1 each, the last turn with the
    # finish and the hand-over 1; the lease release 1 (a worker forgets the lease at commit,
    # which the test transaction delays); the roll-up 1.
    with (
        django_assert_num_queries(1 + 1 + 1 + 3 + 1 + 1 + 1),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.dialogue_generate(dialogue_id=dialogue.pk)
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE
    assert dialogue.stop_reason == "turn limit reached"
    assert (dialogue.lease_owner, dialogue.lease_expires_at) == ("", None)
    assert dialogue.finished_at is not None
    assert [t.position for t in live_turns(dialogue)] == [0, 1, 2, 3]
    assert all(t.version == 1 and t.discarded_at is None for t in live_turns(dialogue))
    run.refresh_from_db()
    assert run.done_count == 1
    assert run.prompt_tokens == sum(t.prompt_tokens for t in live_turns(dialogue)) > 0


@pytest.mark.postgres
@pytest.mark.parametrize("resumed", [False, True])
def test_the_last_turn_the_cap_allows_hands_the_window_slot_over_before_its_call_once(
    transactional_db, scenario, resumed, django_assert_num_queries
):
    # Autocommit, as in a worker: on_commit callbacks run as soon as each statement commits.
    scenario.min_turns = scenario.max_turns = 4
    scenario.end_marker = ""
    scenario.save()
    run = RunFactory(scenario=scenario, requested_count=2, status=GenerationRun.Status.RUNNING)
    dialogue = DialogueFactory(
        run=run, scenario=scenario, index=0, status=Dialogue.Status.PENDING,
        dispatched_at=timezone.now(), handed_over=resumed,
    )  # fmt: skip
    successor = DialogueFactory(run=run, scenario=scenario, index=1, status=Dialogue.Status.PENDING)
    saved_when_enqueued = []
    with (
        # Lease 1, loading 1, three continuing turns 1 each, the hand-over 1 (and the test's
        # count of saved turns when it enqueues 1), the last turn with the finish and the
        # lease's release 1, the roll-up 1.
        django_assert_num_queries(1 + 1 + 3 + 2 * (not resumed) + 1 + 1),
        mock.patch.object(services, "tasks_run_inline", return_value=False),
        mock.patch.object(
            services,
            "_enqueue",
            side_effect=lambda ids: saved_when_enqueued.append((ids, dialogue.turns.count())),
        ),
    ):
        services.dialogue_generate(dialogue_id=dialogue.pk)
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE and dialogue.turns.count() == 4
    assert dialogue.handed_over
    if resumed:  # it handed over before a crash: never again
        assert saved_when_enqueued == []
        assert Dialogue.objects.get(pk=successor.pk).dispatched_at is None
        return
    # Enqueued once, while the last turn was still being generated.
    assert saved_when_enqueued == [([successor.pk], 3)]
    assert Dialogue.objects.get(pk=successor.pk).dispatched_at is not None
    assert services.dialogue_handed_over()


def _last_turn(dialogue, position):
    from generation.llm.base import ChatResult
    from generation.rules import Verdict

    persona = dialogue.scenario.personas.get(position=position % 2)
    result = ChatResult(
        text="Goodbye.", model="m", prompt_tokens=5, completion_tokens=2, finish_reason="stop"
    )
    verdict = Verdict(text="Goodbye.", warnings=["loop"], stop_reason="loop detected")
    return services._turn_values(
        position=position, speaker=persona, result=result, retries=2, verdict=verdict
    )


@pytest.mark.postgres
@pytest.mark.parametrize("lease", ["ours", "lost"])
def test_the_last_turn_finishes_and_hands_over_in_one_statement_only_while_the_lease_holds(
    scenario, lease, django_assert_num_queries, django_capture_on_commit_callbacks
):
    # Far from the run's end, where a hand-over dispatches one dialogue.
    run = RunFactory(
        scenario=scenario, requested_count=100, max_in_flight=4,
        status=GenerationRun.Status.RUNNING,
    )  # fmt: skip
    finishing = DialogueFactory(
        run=run, scenario=scenario, index=0, status=Dialogue.Status.GENERATING,
        lease_owner="me", lease_expires_at=timezone.now() + timedelta(minutes=1),
    )  # fmt: skip
    taken = DialogueFactory(
        run=run, scenario=scenario, index=1, status=Dialogue.Status.PENDING,
        dispatched_at=timezone.now(),
    )  # fmt: skip
    successor = DialogueFactory(run=run, scenario=scenario, index=2, status=Dialogue.Status.PENDING)
    later = DialogueFactory(run=run, scenario=scenario, index=3, status=Dialogue.Status.PENDING)
    if lease == "lost":
        Dialogue.objects.filter(pk=finishing.pk).update(lease_owner="someone else")
    last_turn = _last_turn(finishing, 0)
    with (
        # A broker: the finishing dialogue hands its window slot over.
        mock.patch.object(services, "tasks_run_inline", return_value=False),
        mock.patch.object(services, "_enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
        django_assert_num_queries(1),  # the roll-up runs after the commit, outside
    ):
        won = services._dialogue_finish(
            dialogue=finishing,
            owner="me",
            fields={"status": Dialogue.Status.COMPLETE, "stop_reason": "loop detected"},
            turn=last_turn,
            usage=(5, 2, Decimal("0.5")),
        )
    finishing.refresh_from_db()
    successor.refresh_from_db()
    if lease == "lost":
        assert won is False
        assert finishing.status == Dialogue.Status.GENERATING
        assert not finishing.turns.exists()
        assert successor.dispatched_at is None
        enqueue.assert_not_called()
        return
    assert won is True
    assert finishing.status == Dialogue.Status.COMPLETE
    assert finishing.stop_reason == "loop detected" and finishing.failure_reason == ""
    assert (finishing.lease_owner, finishing.lease_expires_at) == ("", None)
    turn = finishing.turns.get()
    assert (turn.position, turn.text, turn.original_text, turn.version) == (
        0, "Goodbye.", "Goodbye.", 1,
    )  # fmt: skip
    assert (turn.prompt_tokens, turn.completion_tokens, turn.retries) == (5, 2, 2)
    assert (turn.finish_reason, turn.warnings) == ("stop", ["loop"])
    # The first undispatched dialogue by index, once; the one already dispatched is skipped.
    assert successor.dispatched_at is not None
    assert Dialogue.objects.get(pk=later.pk).dispatched_at is None
    assert Dialogue.objects.get(pk=taken.pk).dispatched_at == taken.dispatched_at
    enqueue.assert_called_once_with([successor.pk])
    assert services.dialogue_handed_over()
    run.refresh_from_db()
    assert (run.done_count, run.prompt_tokens, run.cost_usd) == (1, 5, Decimal("0.5"))


@pytest.mark.parametrize("vendor_path", ["statement", "orm"])
def test_the_runs_last_stretch_hands_over_two_dialogues_at_a_time(
    scenario, vendor_path, django_capture_on_commit_callbacks
):
    if vendor_path == "statement" and connection.vendor != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")
    # The last stretch is the last two windows of the run (4 or 5 of 20 each here).
    run = RunFactory(
        scenario=scenario, requested_count=20, max_in_flight=4,
        status=GenerationRun.Status.RUNNING,
    )  # fmt: skip
    window = services.run_window(max_in_flight=4)
    dialogues = [
        DialogueFactory(run=run, scenario=scenario, index=i, status=Dialogue.Status.PENDING)
        for i in range(20)
    ]
    assert [services._successors_to_claim(d) for d in dialogues] == (
        [1] * (20 - 2 * window) + [2] * (2 * window)
    )
    finishing = dialogues[15]
    Dialogue.objects.filter(pk=finishing.pk).update(
        status=Dialogue.Status.GENERATING, lease_owner="me", dispatched_at=timezone.now()
    )
    finishing.refresh_from_db()
    path = (
        mock.patch.object(connection, "vendor", "sqlite")
        if vendor_path == "orm"
        else contextlib.nullcontext()
    )
    with (
        mock.patch.object(services, "tasks_run_inline", return_value=False),
        mock.patch.object(services, "_enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
        path,
    ):
        assert services._dialogue_hand_over(dialogue=finishing, owner="me")
        # Handed over once: the end of the dialogue dispatches nothing more.
        services._dialogue_complete(dialogue=finishing, owner="me", reason="turn limit reached")
    enqueued = [pk for call in enqueue.call_args_list for pk in call.args[0]]
    assert enqueued == [dialogues[0].pk, dialogues[1].pk]
    assert set(
        Dialogue.objects.filter(run=run, dispatched_at__isnull=False).values_list("pk", flat=True)
    ) == {finishing.pk, dialogues[0].pk, dialogues[1].pk}


@pytest.mark.postgres
def test_a_failure_hands_its_slot_over_and_a_regeneration_does_not(
    scenario, django_capture_on_commit_callbacks
):
    run = RunFactory(scenario=scenario, requested_count=3, status=GenerationRun.Status.RUNNING)
    lease = {"lease_owner": "me", "lease_expires_at": timezone.now() + timedelta(minutes=1)}
    failing = DialogueFactory(
        run=run, scenario=scenario, index=0, status=Dialogue.Status.GENERATING, **lease
    )
    regenerating = DialogueFactory(
        run=run, scenario=scenario, index=1, status=Dialogue.Status.GENERATING,
        resume_from=1, **lease,
    )  # fmt: skip
    waiting = DialogueFactory(run=run, scenario=scenario, index=2, status=Dialogue.Status.PENDING)
    with (
        mock.patch.object(services, "tasks_run_inline", return_value=False),
        mock.patch.object(services, "_enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services._dialogue_complete(dialogue=regenerating, owner="me", reason="turn limit reached")
        assert Dialogue.objects.get(pk=waiting.pk).dispatched_at is None
        enqueue.assert_not_called()
        services._dialogue_fail(dialogue=failing, owner="me", reason="HTTP 401: bad key")
    failing.refresh_from_db()
    assert (failing.status, failing.failure_reason, failing.stop_reason) == (
        Dialogue.Status.FAILED, "HTTP 401: bad key", "",
    )  # fmt: skip
    enqueue.assert_called_once_with([waiting.pk])
    run.refresh_from_db()
    assert (run.done_count, run.failed_count) == (1, 1)


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


def test_gevent_tune_gives_httpcores_idle_socket_probe_the_os_poll():
    from generation import worker

    assert worker.gevent_tune() is False  # no gevent monkey-patching in this process
    script = """
from gevent import monkey
monkey.patch_all()
import socket
import django
django.setup()
import httpcore2._utils as utils
from generation import worker
assert worker.gevent_tune()
assert utils.select.poll is monkey.get_original("select", "poll")
a, b = socket.socketpair()
assert not utils.is_socket_readable(a)
b.sendall(b"x")
assert utils.is_socket_readable(a)  # data waiting
a.recv(1)
b.close()
assert utils.is_socket_readable(a)  # the peer closed: the next read returns b""
print("ok")
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "synthreview.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "test",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "ok", result.stderr[-3000:]
