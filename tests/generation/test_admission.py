"""Admission: a run's first dialogues start spread over the time its endpoints' per-minute limits
take to serve them; later ones start at once."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from generation import services
from generation.engine import admission, dispatch, sweep
from generation.models import Dialogue, Endpoint, Persona
from tests.factories import ScenarioFactory

REDIS = "redis://127.0.0.1:6379/3"


@pytest.fixture
def gated(db, settings, sent):
    """A Redis broker (requests gated); tasks recorded by `sent`, not run."""
    settings.CELERY_BROKER_URL = REDIS
    settings.SYNTHREVIEW_DIALOGUE_HEADROOM = 0.5
    return sent


def limited(name="limited", **limits) -> Endpoint:
    return Endpoint.objects.create(name=name, base_url="http://127.0.0.1:9/v1", **limits)


def scenario_on(opener: Endpoint, other: Endpoint, *, turns=4, max_tokens=(100, 50)):
    """`max_tokens`: (the opener's, the other's)."""
    scenario = ScenarioFactory(min_turns=turns, max_turns=turns, opening_instruction="x" * 40)
    for opens, tokens, endpoint in ((True, max_tokens[0], opener), (False, max_tokens[1], other)):
        Persona.objects.filter(scenario=scenario, opens=opens).update(
            endpoint=endpoint, max_tokens=tokens, system_prompt="y" * 80
        )
    return scenario


def due_in(run) -> list[float]:
    """Each dispatched dialogue's due time, in seconds after the first one's."""
    times = list(
        run.dialogues.filter(dispatched_at__isnull=False)
        .order_by("index")
        .values_list("dispatched_at", flat=True)
    )
    return [(moment - times[0]).total_seconds() for moment in times]


def test_a_dialogue_takes_its_calls_and_estimated_tokens_of_its_busiest_endpoint(gated):
    endpoint = limited(requests_per_minute=120, tokens_per_minute=6000)
    run = services.run_launch(scenario=scenario_on(endpoint, endpoint), count=1)
    # Opener (max_tokens 100) speaks turns 0 and 2, the other (50) turns 1 and 3; every prompt
    # holds 120 characters of instructions (30 tokens) and the turns before it at max_tokens.
    tokens = [30 + 0 + 100, 30 + 100 + 50, 30 + 150 + 100, 30 + 250 + 50]
    assert admission.start_spacing(run=run) == pytest.approx(
        max(4 * 60 / 120, sum(tokens) * 60 / 6000)
    )
    assert sum(tokens) * 60 / 6000 > 2  # the tokens decide here
    personas = list(run.scenario.personas.select_related("endpoint"))
    assert admission.dialogue_calls(run=run, personas=personas) == {endpoint: (4, sum(tokens))}


def test_each_endpoint_counts_only_its_own_calls(gated):
    slow = limited("slow", requests_per_minute=60)
    fast = limited("fast", requests_per_minute=6000, tokens_per_minute=10**6)
    run = services.run_launch(scenario=scenario_on(slow, fast, turns=5), count=1)
    # The opener, on the slow endpoint, makes turns 0, 2 and 4: three calls at one a second.
    assert admission.start_spacing(run=run) == pytest.approx(3.0)


def test_no_per_minute_limit_demo_or_no_broker_means_no_spacing(
    gated, settings, django_capture_on_commit_callbacks
):
    concurrency_only = limited(max_concurrent=4)
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_launch(scenario=scenario_on(concurrency_only, concurrency_only), count=3)
    assert admission.start_spacing(run=run) == 0
    assert len(gated) == 3 and set(gated.countdowns.values()) == {None}

    demo = services.run_launch(scenario=ScenarioFactory(), count=1)
    assert demo.provider == "demo" and admission.start_spacing(run=demo) == 0

    endpoint = limited("per-minute", requests_per_minute=60)
    run = services.run_launch(scenario=scenario_on(endpoint, endpoint), count=1)
    assert admission.start_spacing(run=run) > 0
    settings.CELERY_BROKER_URL = ""  # no broker: one dialogue after another in this process
    assert admission.start_spacing(run=run) == 0


def test_the_first_window_starts_spaced_and_is_due_when_it_starts(
    gated, django_capture_on_commit_callbacks
):
    endpoint = limited(requests_per_minute=240)  # 4 calls: one dialogue a second
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_launch(
            scenario=scenario_on(endpoint, endpoint), count=10, max_in_flight=4
        )
    window = dispatch.run_window(max_in_flight=4)
    assert len(gated) == window == 6
    assert [gated.countdowns[pk] for pk in gated] == [None, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert due_in(run) == pytest.approx([0, 1, 2, 3, 4, 5], abs=0.01)


def test_the_spread_is_capped_whatever_the_limits(gated, django_capture_on_commit_callbacks):
    endpoint = limited(requests_per_minute=1)  # four minutes a dialogue
    with django_capture_on_commit_callbacks(execute=True):
        services.run_launch(scenario=scenario_on(endpoint, endpoint), count=10, max_in_flight=4)
    countdowns = [gated.countdowns[pk] or 0 for pk in gated]
    assert countdowns == pytest.approx([0, 120, 240, 360, 480, 600])  # not 240 apart
    assert max(countdowns) == dispatch.MAX_SPREAD_SECONDS
    assert dispatch.start_delays(1, spacing=30) == [0.0]
    assert dispatch.start_delays(3, spacing=0) == [0.0, 0.0, 0.0]


def test_a_successor_and_a_sweep_top_up_start_at_once(gated, django_capture_on_commit_callbacks):
    endpoint = limited(requests_per_minute=240)
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_launch(
            scenario=scenario_on(endpoint, endpoint), count=10, max_in_flight=2
        )
    first = list(gated)
    assert len(first) == 3 and gated.countdowns[first[-1]] == 2.0
    Dialogue.objects.filter(pk=first[0]).update(status=Dialogue.Status.COMPLETE)
    with django_capture_on_commit_callbacks(execute=True):
        successor = dispatch.successor_claim(run=run)
    Dialogue.objects.filter(pk=first[1]).update(status=Dialogue.Status.COMPLETE)
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.run_dispatch(run_id=run.pk) == 1
    later = gated[len(first) :]
    assert later[0] == successor and len(later) == 2
    assert [gated.countdowns[pk] for pk in later] == [None, None]


def test_the_sweep_waits_for_a_delayed_dialogue_from_the_time_it_is_due(
    gated, settings, django_capture_on_commit_callbacks
):
    settings.SYNTHREVIEW_DISPATCH_STALE_SECONDS = 60
    endpoint = limited(requests_per_minute=4)  # a minute a dialogue
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_launch(
            scenario=scenario_on(endpoint, endpoint), count=3, max_in_flight=2
        )
    last = run.dialogues.get(index=2)
    assert gated.countdowns[last.pk] == 120
    # Due in two minutes: not stale for three, however long ago it was sent.
    Dialogue.objects.filter(pk=last.pk).update(
        dispatched_at=timezone.now() + timedelta(seconds=120 - 90)
    )
    with django_capture_on_commit_callbacks(execute=True):
        sweep.dialogues_sweep()
    assert gated.count(last.pk) == 1
    Dialogue.objects.filter(pk=last.pk).update(dispatched_at=timezone.now() - timedelta(seconds=61))
    with django_capture_on_commit_callbacks(execute=True):
        sweep.dialogues_sweep()
    assert gated.count(last.pk) == 2 and gated.countdowns[last.pk] is None


def test_the_spacing_is_the_estimate_pacing_makes_of_a_call(gated):
    endpoint = limited(tokens_per_minute=60)  # one token a second
    scenario = scenario_on(endpoint, endpoint, turns=1, max_tokens=(7, 7))
    run = services.run_launch(scenario=scenario, count=1)
    assert admission.start_spacing(run=run) == pytest.approx(math.ceil(120 / 4) + 7)
