"""The generation engine on its own database (SQLite or PostgreSQL, one code path for both):
dispatch and the window, the hand-over of a slot, the turn loop, leases, usage, the sweep."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import traceback
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from celery import current_app
from django.db import connection
from django.db.models import F, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generation import services, tasks
from generation.engine import dispatch, endpoints, finish, gate, leases, loop, sweep, usage
from generation.llm import get_client
from generation.models import Dialogue, GenerationRun, Turn
from generation.signals import dialogue_completed
from review import receivers as review_receivers
from tests.factories import DialogueFactory, RunFactory, TurnFactory, dialogue_with_turns

ROOT = Path(__file__).resolve().parents[2]


def launch(scenario, count=2, **kwargs):
    return services.run_launch(scenario=scenario, count=count, **kwargs)


def live_turns(dialogue):
    return list(dialogue.turns.filter(discarded_at__isnull=True).order_by("position"))


@contextlib.contextmanager
def completion_receivers_disconnected():
    """Whatever listens to `dialogue_completed`, through the signal's public API."""
    receivers = [
        (review_receivers.judge_completed_dialogue, "review.judge_completed_dialogue"),
        (review_receivers.check_completed_dialogue, "review.check_completed_dialogue"),
    ]
    for _, uid in receivers:
        dialogue_completed.disconnect(dispatch_uid=uid)
    try:
        yield
    finally:
        for receiver, uid in receivers:
            dialogue_completed.connect(receiver, dispatch_uid=uid)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def open_in_window(run) -> int:
    """Dialogues of the run dispatched or generating: what the window bounds."""
    return run.dialogues.filter(
        Q(status=Dialogue.Status.GENERATING)
        | Q(status=Dialogue.Status.PENDING, dispatched_at__isnull=False)
    ).count()


def leased(run, index, **kwargs):
    """A dialogue being generated under the lease "me"."""
    return DialogueFactory(
        run=run, index=index, status=Dialogue.Status.GENERATING, lease_owner="me",
        lease_expires_at=timezone.now() + timedelta(minutes=1), dispatched_at=timezone.now(),
        **kwargs,
    )  # fmt: skip


# --- dispatch and the window ----------------------------------------------------------------------


def test_dispatch_fills_the_window_and_no_more(scenario, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=5, max_in_flight=2)
    first_two = list(run.dialogues.order_by("index").values_list("pk", flat=True)[:2])
    assert sent == first_two  # sent once the launch committed
    assert services.run_dispatch(run_id=run.pk) == 0  # window full
    Dialogue.objects.filter(pk=first_two[0]).update(status=Dialogue.Status.COMPLETE)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.run_dispatch(run_id=run.pk) == 1
    assert len(sent) == 3 and open_in_window(run) == 2


@pytest.mark.parametrize(("requested", "claimed"), [(5, 1), (4, 2)])
def test_in_the_last_stretch_an_ending_dialogue_hands_over_to_two(
    scenario, sent, django_capture_on_commit_callbacks, requested, claimed
):
    """The successor at index 2 is among the last `max_in_flight` (2) of 4 dialogues, not
    of 5: then the one after it is claimed too, so the run's last dialogues start sooner."""
    run = RunFactory(scenario=scenario, requested_count=requested, max_in_flight=2,
                     status=GenerationRun.Status.RUNNING)  # fmt: skip
    ending, other = leased(run, 0), leased(run, 1)
    waiting = [DialogueFactory(run=run, index=i, status=Dialogue.Status.PENDING)
               for i in range(2, requested)]  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        ended = finish.dialogue_complete(dialogue=ending, owner="me", reason="end marker")
    assert ended.successor == waiting[0].pk
    assert sent == [d.pk for d in waiting[:claimed]]
    assert open_in_window(run) == 1 + claimed
    with django_capture_on_commit_callbacks(execute=True):
        ended = finish.dialogue_complete(dialogue=other, owner="me", reason="end marker")
    assert ended.successor == (waiting[1].pk if claimed == 1 else None)


def test_gated_the_window_keeps_headroom_dialogues_beyond_the_request_slots(
    scenario, settings, sent
):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"
    settings.SYNTHREVIEW_DIALOGUE_HEADROOM = 0.25
    assert services.requests_gated()
    assert services.run_window(max_in_flight=8) == 10
    assert services.run_window(max_in_flight=64) == 80
    assert services.run_window(max_in_flight=1) == 2  # rounded up
    run = launch(scenario, count=20, max_in_flight=8)
    assert services.run_dispatch(run_id=run.pk) == 10
    assert services.run_dispatch(run_id=run.pk) == 0
    settings.SYNTHREVIEW_DIALOGUE_HEADROOM = 0
    assert services.run_window(max_in_flight=8) == 8  # one dialogue per slot


def test_inline_the_window_is_one_dialogue_per_slot(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"
    assert dispatch.tasks_run_inline() and not services.requests_gated()
    assert services.run_window(max_in_flight=8) == 8


def test_with_a_broker_the_task_is_sent_by_name_to_the_configured_queue(settings):
    settings.CELERY_TASK_DEFAULT_QUEUE = "the-queue"
    app = current_app._get_current_object()
    with (
        mock.patch.object(dispatch, "tasks_run_inline", return_value=False),
        mock.patch.object(app, "send_task") as send_task,
    ):
        dispatch.enqueue([7, 8])
    assert send_task.call_args_list == [
        mock.call("generation.generate_dialogue", args=(7,), queue="the-queue", countdown=None),
        mock.call("generation.generate_dialogue", args=(8,), queue="the-queue", countdown=None),
    ]


def test_a_process_that_never_imported_the_tasks_finds_the_task_to_run_inline():
    script = """
import sys
import django
django.setup()
from generation.engine import dispatch
assert "generation.tasks" not in sys.modules
assert dispatch.tasks_run_inline()
print(dispatch._dialogue_task().name)
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "synthreview.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "test",
        "CELERY_BROKER_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "generation.generate_dialogue", result.stderr[-3000:]


@pytest.mark.django_db(transaction=True)
def test_inline_a_run_is_generated_one_dialogue_after_another_on_a_flat_stack(scenario):
    # Autocommit, as in a web process: each commit runs its callbacks at once, so every
    # finishing dialogue enqueues its successor from inside the task being run.
    depths = []
    generate = loop.dialogue_generate

    def recording(*, dialogue_id):
        depths.append(len(traceback.extract_stack()))
        return generate(dialogue_id=dialogue_id)

    with mock.patch.object(tasks, "dialogue_generate", side_effect=recording):
        run = launch(scenario, count=30, max_in_flight=2)
    run.refresh_from_db()
    assert len(depths) == 30 and len(set(depths)) == 1
    assert run.status == GenerationRun.Status.FINISHED and run.done_count == 30


# --- handing a window slot over -----------------------------------------------------------------


def test_a_dialogue_that_ends_hands_its_slot_to_the_next_pending_one_in_the_same_commit(
    scenario, sent, django_capture_on_commit_callbacks
):
    # 10 requested: the successor is before the run's last stretch.
    run = RunFactory(scenario=scenario, requested_count=10, max_in_flight=2,
                     status=GenerationRun.Status.RUNNING)  # fmt: skip
    ending = leased(run, 0)
    DialogueFactory(run=run, index=1, status=Dialogue.Status.PENDING, dispatched_at=timezone.now())
    successor = DialogueFactory(run=run, index=2, status=Dialogue.Status.PENDING)
    later = DialogueFactory(run=run, index=3, status=Dialogue.Status.PENDING)
    assert open_in_window(run) == 2
    with django_capture_on_commit_callbacks(execute=True):
        ended = finish.dialogue_complete(dialogue=ending, owner="me", reason="end marker")
    assert ended == finish.Finished(successor=successor.pk)
    assert sent == [successor.pk]
    assert open_in_window(run) == 2  # the successor took the slot in the same commit
    ending.refresh_from_db()
    assert (ending.status, ending.stop_reason) == (Dialogue.Status.COMPLETE, "end marker")
    assert (ending.lease_owner, ending.lease_expires_at) == ("", None)
    assert Dialogue.objects.get(pk=later.pk).dispatched_at is None
    run.refresh_from_db()
    assert run.done_count == 1  # rolled up after the commit


def test_a_dialogue_whose_lease_was_lost_writes_nothing_and_hands_nothing_over(
    scenario, sent, django_capture_on_commit_callbacks
):
    run = RunFactory(scenario=scenario, requested_count=2, status=GenerationRun.Status.RUNNING)
    ending = leased(run, 0)
    waiting = DialogueFactory(run=run, index=1, status=Dialogue.Status.PENDING)
    Dialogue.objects.filter(pk=ending.pk).update(lease_owner="someone else")
    last = Turn(dialogue=ending, position=0, persona=scenario.personas.first(), text="Bye.",
                original_text="Bye.", side="user")  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        ended = finish.dialogue_complete(
            dialogue=ending, owner="me", reason="end marker", turn=last,
            usage=usage.Usage(5, 2, Decimal("0.5")),
        )  # fmt: skip
    assert ended is None and sent == []
    ending.refresh_from_db()
    assert ending.status == Dialogue.Status.GENERATING and not ending.turns.exists()
    assert ending.pending_prompt_tokens == 0
    assert Dialogue.objects.get(pk=waiting.pk).dispatched_at is None


def test_a_failure_hands_its_slot_over_and_a_regeneration_does_not(
    scenario, sent, django_capture_on_commit_callbacks
):
    run = RunFactory(scenario=scenario, requested_count=3, status=GenerationRun.Status.RUNNING)
    failing = leased(run, 0)
    regenerating = leased(run, 1, resume_from=1)
    waiting = DialogueFactory(run=run, index=2, status=Dialogue.Status.PENDING)
    with django_capture_on_commit_callbacks(execute=True):
        finish.dialogue_complete(dialogue=regenerating, owner="me", reason="turn limit reached")
        assert Dialogue.objects.get(pk=waiting.pk).dispatched_at is None
        finish.dialogue_fail(dialogue=failing, owner="me", reason="HTTP 401: bad key")
    failing.refresh_from_db()
    assert (failing.status, failing.failure_reason, failing.stop_reason) == (
        Dialogue.Status.FAILED, "HTTP 401: bad key", "",
    )  # fmt: skip
    assert sent == [waiting.pk]
    run.refresh_from_db()
    assert (run.done_count, run.failed_count) == (1, 1)


def test_completion_is_announced_after_commit_and_failure_is_not(
    scenario, sent, django_capture_on_commit_callbacks
):
    run = RunFactory(scenario=scenario, requested_count=3, status=GenerationRun.Status.RUNNING)
    first, regenerated, failing = leased(run, 0), leased(run, 1, resume_from=1), leased(run, 2)
    heard = []

    def receiver(sender, **kwargs):
        heard.append(kwargs)

    dialogue_completed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            finish.dialogue_complete(dialogue=first, owner="me", reason="turn limit reached")
        assert heard == []
        for callback in callbacks:
            callback()
        with django_capture_on_commit_callbacks(execute=True):
            finish.dialogue_complete(dialogue=regenerated, owner="me", reason="end marker")
            finish.dialogue_fail(dialogue=failing, owner="me", reason="HTTP 401: bad key")
            finish.dialogue_complete(dialogue=first, owner="me", reason="lease long gone")
    finally:
        dialogue_completed.disconnect(receiver)
    assert [(h["dialogue_id"], h["run_id"], h["regenerated"]) for h in heard] == [
        (first.pk, run.pk, False),
        (regenerated.pk, run.pk, True),
    ]


def test_only_a_dialogue_that_handed_nothing_over_closes_the_run(scenario, sent):
    run = RunFactory(scenario=scenario, requested_count=2, status=GenerationRun.Status.RUNNING)
    first = DialogueFactory(run=run, index=0, status=Dialogue.Status.PENDING,
                            dispatched_at=timezone.now())  # fmt: skip
    second = DialogueFactory(run=run, index=1, status=Dialogue.Status.PENDING)
    assert services.dialogue_generate(dialogue_id=first.pk) == loop.Generated(
        run_id=run.pk, successor=second.pk
    )
    assert services.dialogue_generate(dialogue_id=second.pk) == loop.Generated(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FINISHED


# --- the turn loop --------------------------------------------------------------------------------


class RecordingSlots:
    def __init__(self) -> None:
        self.events: list[str] = []

    def acquire(self, *, keep_waiting) -> str:
        self.events.append("acquire")
        return "slot"

    def release(self, holder: str) -> None:
        self.events.append("release")


def test_a_gated_dialogue_takes_a_request_slot_for_each_call(scenario, settings, sent):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"
    slots = RecordingSlots()
    with mock.patch.object(gate, "request_gate", return_value=slots) as request_gate:
        run = launch(scenario, count=1, max_in_flight=3)
        dialogue = run.dialogues.get()
        services.dialogue_generate(dialogue_id=dialogue.pk)
    request_gate.assert_called_once_with(run_id=run.pk, limit=3)
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE
    assert slots.events == ["acquire", "release"] * dialogue.turns.count()


@pytest.mark.django_db(transaction=True)
def test_a_four_turn_dialogue_costs_a_bounded_number_of_queries(scenario):
    # Autocommit, as in a worker: each transaction commits, and runs its callbacks, at once.
    scenario.min_turns = scenario.max_turns = 4
    scenario.end_marker = ""
    scenario.save()
    run = RunFactory(scenario=scenario, requested_count=1, status=GenerationRun.Status.RUNNING)
    dialogue = DialogueFactory(run=run, scenario=scenario, status=Dialogue.Status.PENDING)
    # The engine's own statements: other apps' follow-up work (which runs inline here, without
    # a broker) is not generation's to count.
    with completion_receivers_disconnected(), CaptureQueriesContext(connection) as queries:
        services.dialogue_generate(dialogue_id=dialogue.pk)
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    # The lease 1; loading 3; three continuing turns, each an UPDATE (lease, usage) and the
    # INSERT; the last turn with the end: BEGIN, UPDATE, INSERT, the successor's SELECT
    # (none here), the run's totals UPDATE, COMMIT; closing the run 2.
    assert statements == (
        ["UPDATE"] + ["SELECT"] * 3 + ["UPDATE", "INSERT"] * 3
        + ["BEGIN", "UPDATE", "INSERT", "SELECT", "UPDATE", "COMMIT"]
        + ["SELECT", "UPDATE"]
    )  # fmt: skip
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE
    assert dialogue.stop_reason == "turn limit reached"
    assert (dialogue.lease_owner, dialogue.lease_expires_at) == ("", None)
    assert [t.position for t in live_turns(dialogue)] == [0, 1, 2, 3]
    run.refresh_from_db()
    assert run.done_count == 1 and run.status == GenerationRun.Status.FINISHED
    assert run.prompt_tokens == sum(t.prompt_tokens for t in live_turns(dialogue)) > 0


def test_finished_dialogues_are_not_generated_again(db):
    dialogue = dialogue_with_turns(3)
    assert services.dialogue_generate(dialogue_id=dialogue.pk) == loop.Generated(dialogue.run_id)
    assert dialogue.turns.count() == 3
    assert services.dialogue_generate(dialogue_id=dialogue.pk + 1000) is None


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
    demo = get_client("demo")

    class CancellingClient:
        provider = "demo"

        def complete(self, request):
            services.run_cancel(run=run)
            return demo.complete(request)

    with mock.patch.object(endpoints, "DemoClient", return_value=CancellingClient()):
        services.dialogue_generate(dialogue_id=dialogue.pk)
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.CANCELLED
    assert dialogue.turns.count() == 0
    assert dialogue.lease_owner == ""


# --- leases ---------------------------------------------------------------------------------------


def acquire(dialogue, owner):
    return leases.lease_acquire(dialogue_id=dialogue.pk, owner=owner).won


def test_lease_is_exclusive_until_it_expires(db):
    dialogue = DialogueFactory(status=Dialogue.Status.PENDING)
    assert acquire(dialogue, "elsewhere:1:1:a")
    assert not acquire(dialogue, "elsewhere:2:1:b")
    Dialogue.objects.filter(pk=dialogue.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert acquire(dialogue, "elsewhere:2:1:b")
    dialogue.refresh_from_db()
    assert dialogue.lease_owner == "elsewhere:2:1:b" and dialogue.attempts == 2
    assert leases.leases_held()[dialogue.pk] == "elsewhere:2:1:b"
    leases.lease_release(dialogue_id=dialogue.pk, owner="elsewhere:2:1:b")
    assert dialogue.pk not in leases.leases_held()


def test_a_dead_process_on_this_host_loses_its_lease_at_once(db):
    dialogue = DialogueFactory(status=Dialogue.Status.PENDING)
    assert acquire(dialogue, f"{leases.HOSTNAME}:{dead_pid()}:1:x")
    assert acquire(dialogue, "new:1:1:y")
    other = DialogueFactory(status=Dialogue.Status.PENDING)
    assert acquire(other, f"{leases.HOSTNAME}:{os.getppid()}:1:z")
    assert not acquire(other, "new:1:1:y")


# --- usage and the run's totals -------------------------------------------------------------------


def test_cost_uses_per_model_prices(settings):
    settings.SYNTHREVIEW_MODEL_PRICES = {"m": (1.0, 2.0)}
    assert usage.cost("m", 1_000_000, 500_000) == Decimal("2.000000")
    assert usage.cost("unpriced", 1_000_000, 1_000_000) == Decimal("0")


def test_usage_is_rolled_up_into_the_run_once(scenario, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=2)
    run.refresh_from_db()
    turns = Turn.objects.filter(dialogue__run=run)
    assert run.prompt_tokens == sum(t.prompt_tokens for t in turns) > 0
    assert run.completion_tokens == sum(t.completion_tokens for t in turns) > 0
    assert not Dialogue.objects.filter(pending_prompt_tokens__gt=0).exists()
    usage.usage_rollup(dialogue_id=run.dialogues.first().pk)
    run.refresh_from_db()
    assert run.prompt_tokens == sum(t.prompt_tokens for t in turns)
    assert run.done_count == 2


def test_an_outcome_is_counted_once_and_the_sweep_counts_what_a_crash_missed(scenario, sent):
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
    services.dialogues_sweep()
    services.dialogues_sweep()
    usage.usage_rollup(dialogue_id=missed.pk)
    run.refresh_from_db()
    missed.refresh_from_db()
    assert (run.done_count, run.failed_count) == (1, 0)
    assert (run.prompt_tokens, run.completion_tokens, run.cost_usd) == (10, 5, Decimal("0.5"))
    assert missed.counted_in_run and missed.pending_prompt_tokens == 0


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
            usage.usage_rollup(dialogue_id=dialogue.pk)
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
@pytest.mark.django_db(transaction=True)
def test_concurrent_endings_hand_their_slots_to_distinct_successors(scenario, sent):
    # 40 requested: the 8 waiting are before the run's last stretch, one successor each.
    run = RunFactory(scenario=scenario, requested_count=40, max_in_flight=8,
                     status=GenerationRun.Status.RUNNING)  # fmt: skip
    ending = [leased(run, i) for i in range(8)]
    waiting = [DialogueFactory(run=run, index=i, status=Dialogue.Status.PENDING)
               for i in range(8, 16)]  # fmt: skip
    start = threading.Barrier(8)
    successors = []

    def end(dialogue):
        try:
            start.wait()
            ended = finish.dialogue_complete(dialogue=dialogue, owner="me", reason="end marker")
            successors.append(ended.successor)
        finally:
            connection.close()

    threads = [threading.Thread(target=end, args=(d,)) for d in ending]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(successors) == sorted(sent) == sorted(d.pk for d in waiting)
    assert open_in_window(run) == 8
    run.refresh_from_db()
    assert run.done_count == 8


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


# --- sweep ----------------------------------------------------------------------------------------


def test_sweep_requeues_expired_leases_once(scenario, sent, django_capture_on_commit_callbacks):
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
    with django_capture_on_commit_callbacks(execute=True):
        assert services.dialogues_sweep() == 1
        assert services.dialogues_sweep() == 0
    assert sent == [expired.pk]
    expired.refresh_from_db()
    live.refresh_from_db()
    assert expired.status == Dialogue.Status.PENDING and expired.lease_owner == ""
    assert live.status == Dialogue.Status.GENERATING


def test_sweep_takes_over_at_once_from_a_dead_process_on_this_host(scenario, sent):
    run = RunFactory(scenario=scenario, requested_count=1, status=GenerationRun.Status.RUNNING)
    dialogue = DialogueFactory(
        run=run,
        status=Dialogue.Status.GENERATING,
        lease_owner=f"{leases.HOSTNAME}:{dead_pid()}:1:x",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )
    assert services.dialogues_sweep() == 1
    assert sent == [dialogue.pk]


def test_sweep_requeues_dialogues_whose_task_never_started(scenario, settings, sent):
    run = RunFactory(scenario=scenario, requested_count=1, status=GenerationRun.Status.RUNNING)
    old = timezone.now() - timedelta(seconds=settings.SYNTHREVIEW_DISPATCH_STALE_SECONDS + 1)
    dialogue = DialogueFactory(run=run, status=Dialogue.Status.PENDING, dispatched_at=old)
    assert sweep.dialogues_sweep() == 1
    assert sent == [dialogue.pk]
    assert sweep.dialogues_sweep() == 0


def test_a_worker_imports_the_sdk_when_it_starts(monkeypatch):
    """Not at a run's first call, which every first dialogue would wait out together."""
    from celery.signals import worker_init

    import generation.llm

    assert tasks._import_llm_sdk in [ref() for _, ref in worker_init.receivers]
    monkeypatch.delitem(sys.modules, "generation.llm.openai_client", raising=False)
    monkeypatch.delattr(generation.llm, "openai_client", raising=False)
    tasks._import_llm_sdk()
    assert "generation.llm.openai_client" in sys.modules
