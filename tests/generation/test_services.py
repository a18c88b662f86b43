"""Run, dialogue and scenario services: launch (inline, with the demo and the OpenAI client over
HTTP), cancel, regenerate from a turn, scenario readiness."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from generation import services
from generation.models import Dialogue, GenerationRun, Scenario, Turn
from tests.factories import (
    DialogueFactory,
    RunFactory,
    ScenarioFactory,
    dialogue_with_turns,
)


def launch(scenario, count=2, **kwargs):
    return services.run_launch(scenario=scenario, count=count, **kwargs)


def live_turns(dialogue):
    return list(dialogue.turns.filter(discarded_at__isnull=True).order_by("position"))


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


def test_a_rolled_back_launch_enqueues_nothing(scenario, sent, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        launch(scenario, count=2)
        raise RuntimeError("abort")
    assert callbacks == []
    assert sent == []
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


def test_an_empty_reply_is_retried_and_never_ends_a_dialogue(
    scenario, openai_provider, django_capture_on_commit_callbacks
):
    openai_provider.configure(script=[None, "empty", None, "empty", "empty"])
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=1)
    dialogue = run.dialogues.get()
    turns = live_turns(dialogue)
    assert dialogue.status == Dialogue.Status.COMPLETE and len(turns) == 4
    assert all(t.text and not t.warnings for t in turns)
    assert [t.retries for t in turns] == [0, 1, 2, 0]


def test_a_dialogue_that_cannot_reach_its_minimum_fails_and_is_never_complete(
    scenario, openai_provider, settings, django_capture_on_commit_callbacks
):
    settings.SYNTHREVIEW_LLM_MAX_RETRIES = 2
    scenario.min_turns, scenario.max_turns = 3, 4
    scenario.save()
    # Turn 0 answers; every attempt at turn 1 comes back empty.
    openai_provider.configure(script=[None, "empty", "empty", "empty"])
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=1)
    dialogue = run.dialogues.get()
    assert dialogue.status == Dialogue.Status.FAILED
    assert dialogue.failure_reason == "gave up after 3 attempts: empty reply"
    assert len(live_turns(dialogue)) == 1
    run.refresh_from_db()
    assert (run.status, run.done_count, run.failed_count) == (GenerationRun.Status.FAILED, 0, 1)


def test_a_dialogue_ended_by_its_persona_before_the_minimum_fails_with_the_reason(
    scenario, openai_provider, django_capture_on_commit_callbacks
):
    scenario.min_turns, scenario.max_turns = 3, 4
    scenario.save()
    replies = iter(["Hello.", "<END>"])  # the second persona ends it at once
    openai_provider.configure(reply=lambda payload: next(replies, "More."))
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(scenario, count=1)
    dialogue = run.dialogues.get()
    assert dialogue.status == Dialogue.Status.FAILED
    assert dialogue.failure_reason == (
        "ended after 2 turns (end marker), before the scenario's minimum of 3"
    )
    assert len(live_turns(dialogue)) == 2  # kept for the record


def test_model_and_temperature_overrides_reach_the_server(
    scenario, openai_provider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        launch(scenario, count=1, model_override="gpt-4o-mini", temperature_override=0.1)
    payload = openai_provider.state.payloads[0]
    assert payload["model"] == "gpt-4o-mini" and payload["temperature"] == 0.1
    run = GenerationRun.objects.get()
    assert run.cost_usd > 0  # priced model


# --- cancel ------------------------------------------------------------------------------


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
    db, sent, django_capture_on_commit_callbacks
):
    dialogue = dialogue_with_turns(3)
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.dialogue_regenerate_from(dialogue=dialogue, position=0)
        raise RuntimeError("abort")
    assert sent == []
    assert dialogue.turns.filter(discarded_at__isnull=True).count() == 3
    assert Dialogue.objects.get(pk=dialogue.pk).status == Dialogue.Status.COMPLETE
