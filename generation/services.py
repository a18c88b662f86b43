"""Writes for generation: launching, dispatching, generating, cancelling, regenerating runs.

Every state change that two processes could race on is a conditional UPDATE whose row count
says who won (the lease, status transitions, counters), so nothing is done twice and no
counter update is lost, whichever worker, thread or sweep gets there first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from . import gate, rules
from .llm import (
    ChatRequest,
    ChatResult,
    PermanentLLMError,
    complete_with_retries,
    current_provider,
    get_client,
)
from .llm.retry import Aborted
from .models import Dialogue, GenerationRun, Persona, Scenario, Turn

log = logging.getLogger(__name__)

OPEN_STATUSES = (Dialogue.Status.PENDING, Dialogue.Status.GENERATING)
# Overridable so one machine can stand in for several (tests of the cross-machine recovery path).
HOSTNAME = settings.SYNTHREVIEW_WORKER_HOSTNAME or socket.gethostname()


class GenerationBusy(Exception):
    """The dialogue is being generated right now; regenerating would race the worker."""


class ScenarioNotReady(Exception):
    """The scenario cannot be generated from (e.g. it lacks its two personas)."""


# --- Leases ---------------------------------------------------------------------------------------


def lease_owner_new() -> str:
    """host:pid:thread:nonce. Host and pid let a worker on the same machine see the holder died."""
    return f"{HOSTNAME}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def lease_owner_is_dead(owner: str) -> bool:
    """True only when the holder provably died: same host, and its process no longer exists."""
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != HOSTNAME:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


# Leases held by this process, renewed by the worker's heartbeat thread (generation.worker).
_held_leases: dict[int, str] = {}
_held_lock = threading.Lock()


def held_leases() -> dict[int, str]:
    with _held_lock:
        return dict(_held_leases)


def leases_renew(*, leases: dict[int, str]) -> int:
    """Extend the leases this process holds; a lost lease simply stops matching."""
    if not leases:
        return 0
    expires = timezone.now() + timedelta(seconds=settings.SYNTHREVIEW_LEASE_SECONDS)
    return Dialogue.objects.filter(
        pk__in=list(leases),
        lease_owner__in=list(leases.values()),
        status=Dialogue.Status.GENERATING,
    ).update(lease_expires_at=expires)


def dialogue_acquire_lease(*, dialogue_id: int, owner: str) -> bool:
    return _lease_acquire(dialogue_id=dialogue_id, owner=owner)[0]


def _lease_acquire(*, dialogue_id: int, owner: str) -> tuple[bool, dict | None]:
    """(won, the dialogue's row as read: run id, run status, lease) in two queries.

    On PostgreSQL the usual case, a lease nobody holds, is one statement instead.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        row = _lease_acquire_free(dialogue_id=dialogue_id, owner=owner, now=now)
        if row is not None:
            with _held_lock:
                _held_leases[dialogue_id] = owner
            return True, row
    current = (
        Dialogue.objects.filter(pk=dialogue_id)
        .values("status", "lease_owner", "lease_expires_at", "run_id", "run__status")
        .first()
    )
    if current is None or current["status"] not in OPEN_STATUSES:
        return False, current
    candidates = Dialogue.objects.filter(pk=dialogue_id, status__in=OPEN_STATUSES)
    live = (
        current["lease_owner"] and current["lease_expires_at"] and current["lease_expires_at"] > now
    )
    if live:
        # A SIGKILLed child's redelivered task lands here: take over at once instead of
        # waiting for the lease to run out.
        if not lease_owner_is_dead(current["lease_owner"]):
            return False, current
        candidates = candidates.filter(lease_owner=current["lease_owner"])
    else:
        candidates = candidates.filter(
            Q(lease_owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
        )
    won = candidates.update(
        status=Dialogue.Status.GENERATING,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=settings.SYNTHREVIEW_LEASE_SECONDS),
        attempts=F("attempts") + 1,
        updated_at=now,
    )
    if won:
        with _held_lock:
            _held_leases[dialogue_id] = owner
    return bool(won), current


_LEASE_ACQUIRE_FREE_SQL = """
UPDATE {dialogue} AS d
SET status = %s, lease_owner = %s, lease_expires_at = %s, attempts = d.attempts + 1,
    updated_at = %s
FROM {run} AS r
WHERE d.id = %s AND r.id = d.run_id AND d.status IN (%s, %s)
  AND (d.lease_owner = '' OR d.lease_expires_at IS NULL OR d.lease_expires_at <= %s)
RETURNING d.run_id, r.status
"""


def _lease_acquire_free(*, dialogue_id: int, owner: str, now: datetime) -> dict | None:
    """Take a lease nobody holds in one round trip; None: held, finished or gone (fall back).

    The same conditions as the ORM path's UPDATE for an unheld lease; a live holder (maybe a
    dead process on this host) is left to the two-query path, which reads who holds it.
    """
    sql = _LEASE_ACQUIRE_FREE_SQL.format(
        dialogue=connection.ops.quote_name(Dialogue._meta.db_table),
        run=connection.ops.quote_name(GenerationRun._meta.db_table),
    )
    params = [
        Dialogue.Status.GENERATING.value,
        owner,
        now + timedelta(seconds=settings.SYNTHREVIEW_LEASE_SECONDS),
        now,
        dialogue_id,
        Dialogue.Status.PENDING.value,
        Dialogue.Status.GENERATING.value,
        now,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchone()
    if found is None:
        return None
    return {
        "status": Dialogue.Status.GENERATING,
        "lease_owner": owner,
        "lease_expires_at": params[2],
        "run_id": found[0],
        "run__status": found[1],
    }


def dialogue_renew_lease(*, dialogue_id: int, owner: str) -> bool:
    """Renew before a retried LLM call (each turn's save renews before the next first call).

    False: cancelled, regenerated, or taken over; stop.
    """
    alive = leases_renew(leases={dialogue_id: owner}) == 1
    _release_connection()
    return alive


def dialogue_release_lease(*, dialogue_id: int, owner: str) -> None:
    with _held_lock:
        released_at_finish = _held_leases.pop(dialogue_id, None) is None
    if not released_at_finish:
        Dialogue.objects.filter(pk=dialogue_id, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None
        )


def _release_connection() -> None:
    """Hand the thread's DB connection back to the pool while it waits on the LLM.

    Inside an atomic block (tests, callers holding a transaction) closing would break it.
    """
    if not connection.in_atomic_block:
        connection.close()


# --- Launching and dispatch ---------------------------------------------------------------------


def scenario_check_ready(*, scenario: Scenario) -> list[Persona]:
    personas = list(scenario.personas.order_by("position"))
    if len(personas) != 2:
        raise ScenarioNotReady(f"Scenario {scenario.slug!r} needs exactly two personas.")
    if sum(p.opens for p in personas) != 1:
        raise ScenarioNotReady(f"Exactly one persona of {scenario.slug!r} must open.")
    if not scenario.topics:
        raise ScenarioNotReady(f"Scenario {scenario.slug!r} has no topics.")
    return personas


def scenario_pick_topics(*, scenario: Scenario, count: int, seed: int) -> list[str]:
    topics = [str(t) for t in scenario.topics] or [scenario.name]
    if scenario.topic_order == Scenario.TopicOrder.SAMPLED:
        rng = random.Random(seed)
        return [rng.choice(topics) for _ in range(count)]
    return [topics[i % len(topics)] for i in range(count)]


def run_launch(
    *,
    scenario: Scenario,
    count: int,
    created_by=None,
    model_override: str = "",
    temperature_override: float | None = None,
    max_in_flight: int = 64,
    seed: int | None = None,
) -> GenerationRun:
    """Create the run and its dialogues; their tasks are enqueued once this commits."""
    scenario_check_ready(scenario=scenario)
    if count < 1:
        raise ValueError("count must be at least 1")
    seed = random.randrange(2**31) if seed is None else seed
    with transaction.atomic():
        run = GenerationRun.objects.create(
            scenario=scenario,
            requested_count=count,
            provider=current_provider(),
            model_override=model_override.strip(),
            temperature_override=temperature_override,
            max_in_flight=max_in_flight,
            seed=seed,
            created_by=created_by,
        )
        topics = scenario_pick_topics(scenario=scenario, count=count, seed=seed)
        Dialogue.objects.bulk_create(
            [
                Dialogue(run=run, scenario=scenario, index=i, topic=topic[:500])
                for i, topic in enumerate(topics)
            ],
            batch_size=1000,
        )
        transaction.on_commit(lambda: run_dispatch(run_id=run.pk))
    return run


_dispatching = threading.local()


@contextmanager
def _dispatch_guard() -> Iterator[bool]:
    outer = not getattr(_dispatching, "active", False)
    _dispatching.active = True
    try:
        yield outer
    finally:
        if outer:
            _dispatching.active = False


def _enqueue(dialogue_ids: list[int]) -> None:
    from .tasks import generate_dialogue

    inline = tasks_run_inline()
    for dialogue_id in dialogue_ids:
        if inline:
            # No broker: run in-process (apply_async would still set up a broker connection).
            generate_dialogue.apply((dialogue_id,), throw=True)
        else:
            generate_dialogue.apply_async((dialogue_id,), queue=settings.CELERY_TASK_DEFAULT_QUEUE)


def tasks_run_inline() -> bool:
    from synthreview.celery import app

    return bool(app.conf.task_always_eager)


def requests_gated() -> bool:
    """True when each LLM call takes one of its run's request slots (`generation.gate`).

    That needs the workers' shared Redis. With no broker, tasks run inline one at a time, and
    one dialogue per slot caps the requests by construction.
    """
    return not tasks_run_inline() and gate.broker_is_redis()


def run_window(*, max_in_flight: int) -> int:
    """How many of a run's dialogues may be dispatched or generating at once.

    Gated, a run keeps SYNTHREVIEW_DIALOGUE_HEADROOM more dialogues open than it has request
    slots: a dialogue saving its turn or just handed over holds no slot, and another one is
    waiting to use it. Ungated, one dialogue per slot.
    """
    if not requests_gated():
        return max_in_flight
    return max_in_flight + math.ceil(max_in_flight * settings.SYNTHREVIEW_DIALOGUE_HEADROOM)


def run_dispatch(*, run_id: int) -> int:
    """Enqueue pending dialogues up to the run's window; returns how many were enqueued.

    Called at launch, whenever a dialogue finishes (freeing a slot) and by the sweep. With no
    broker the tasks run inline: the outermost call keeps refilling the window while nested
    calls from finishing tasks return at once, so the stack does not grow with the run size.
    """
    total = 0
    with _dispatch_guard() as outer:
        if not outer:
            return 0
        while True:
            with transaction.atomic():
                run = GenerationRun.objects.select_for_update().filter(pk=run_id).first()
                if run is None or run.status not in GenerationRun.ACTIVE_STATUSES:
                    return total
                dialogues = Dialogue.objects.filter(run_id=run_id)
                in_flight = dialogues.filter(
                    Q(status=Dialogue.Status.GENERATING)
                    | Q(status=Dialogue.Status.PENDING, dispatched_at__isnull=False)
                ).count()
                free = run_window(max_in_flight=run.max_in_flight) - in_flight
                if free <= 0:
                    return total
                # Lock order is always dialogue rows before the run row elsewhere (a finishing
                # dialogue locks itself, then the run); holding the run here, never wait for
                # a dialogue row: skip the ones another transaction holds.
                ids = list(
                    dialogues.select_for_update(skip_locked=True)
                    .filter(status=Dialogue.Status.PENDING, dispatched_at__isnull=True)
                    .order_by("index")
                    .values_list("pk", flat=True)[:free]
                )
                if not ids:
                    return total
                Dialogue.objects.filter(pk__in=ids).update(dispatched_at=timezone.now())
                transaction.on_commit(lambda ids=ids: _enqueue(ids))
            total += len(ids)
            if not tasks_run_inline() or connection.in_atomic_block:
                return total


# --- Generating one dialogue ----------------------------------------------------------------------


def _cost(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    prices = settings.SYNTHREVIEW_MODEL_PRICES.get(model)
    if prices is None:
        return Decimal("0")
    usd = (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000
    return Decimal(f"{usd:.6f}")


def dialogue_generate(*, dialogue_id: int) -> int | None:
    """Generate the dialogue's remaining turns, continuing after the last live turn.

    Safe to run any number of times and concurrently: only the lease holder generates, each
    turn is saved (with the lease re-checked and renewed under the row lock) as soon as it
    arrives, and the stop decision is saved in the same transaction as the turn that
    triggered it. Returns the
    run id (None if the dialogue no longer exists).
    """
    _handoff.done = False
    owner = lease_owner_new()
    won, row = _lease_acquire(dialogue_id=dialogue_id, owner=owner)
    if row is None:
        return None
    if not won:
        return row["run_id"]
    try:
        if row["run__status"] == GenerationRun.Status.QUEUED:
            GenerationRun.objects.filter(
                pk=row["run_id"], status=GenerationRun.Status.QUEUED
            ).update(status=GenerationRun.Status.RUNNING, started_at=timezone.now())
        _generate_turns(dialogue_id=dialogue_id, owner=owner)
    finally:
        dialogue_release_lease(dialogue_id=dialogue_id, owner=owner)
    return row["run_id"]


# Per thread: did the last dialogue_generate() hand its window slot to a successor?
_handoff = threading.local()


def dialogue_handed_over() -> bool:
    """True if this thread's last dialogue_generate() committed a hand-over to a successor.

    The successor is then dispatched but not finished, so the run cannot be closed yet and
    the caller can skip run_finalize's count over the run's dialogues.
    """
    return bool(getattr(_handoff, "done", False))


# Each in its model's field order: `from_db`, given a subset of the fields, expects that order.
_DIALOGUE_FIELDS = ("id", "run_id", "scenario_id", "index", "topic", "handed_over", "resume_from")
_RUN_FIELDS = (
    "id", "requested_count", "provider", "model_override", "temperature_override",
    "max_in_flight", "seed",
)  # fmt: skip
_SCENARIO_FIELDS = (
    "id", "slug", "name", "opening_instruction", "min_turns", "max_turns", "end_marker",
)  # fmt: skip
_PERSONA_FIELDS = (
    "id", "scenario_id", "position", "name", "side", "system_prompt", "model", "temperature",
    "max_tokens", "opens",
)  # fmt: skip

_DIALOGUE_LOAD_SQL = """
SELECT {dialogue_columns}, {run_columns}, {scenario_columns},
    (SELECT coalesce(json_agg(json_build_array({persona_columns}) ORDER BY p.position), '[]')
     FROM {persona} AS p WHERE p.scenario_id = s.id),
    (SELECT coalesce(json_agg(json_build_array(tp.position, t.text) ORDER BY t.position), '[]')
     FROM {turn} AS t JOIN {persona} AS tp ON tp.id = t.persona_id
     WHERE t.dialogue_id = d.id AND t.discarded_at IS NULL)
FROM {dialogue} AS d
JOIN {run} AS r ON r.id = d.run_id
JOIN {scenario} AS s ON s.id = d.scenario_id
WHERE d.id = %s
"""


def _dialogue_load(*, dialogue_id: int) -> tuple[Dialogue, dict[int, Persona], list[tuple]]:
    """The dialogue (with its run and scenario), the scenario's personas by position, and the
    live turns as (speaker position, text) in order.

    PostgreSQL: one round trip, the related rows aggregated as JSON. Instances are built with
    `from_db` from the fields generation reads; any other field loads lazily (deferred), so
    nothing reads a default in place of a stored value.
    """
    if connection.vendor != "postgresql":
        dialogue = Dialogue.objects.select_related("run", "scenario").get(pk=dialogue_id)
        personas = {p.position: p for p in dialogue.scenario.personas.all()}
        past = list(
            Turn.objects.filter(dialogue_id=dialogue_id, discarded_at__isnull=True)
            .order_by("position")
            .values_list("persona__position", "text")
        )
        return dialogue, personas, past

    def columns(alias: str, fields: tuple[str, ...]) -> str:
        return ", ".join(f"{alias}.{connection.ops.quote_name(f)}" for f in fields)

    sql = _DIALOGUE_LOAD_SQL.format(
        dialogue_columns=columns("d", _DIALOGUE_FIELDS),
        run_columns=columns("r", _RUN_FIELDS),
        scenario_columns=columns("s", _SCENARIO_FIELDS),
        persona_columns=columns("p", _PERSONA_FIELDS),
        dialogue=connection.ops.quote_name(Dialogue._meta.db_table),
        run=connection.ops.quote_name(GenerationRun._meta.db_table),
        scenario=connection.ops.quote_name(Scenario._meta.db_table),
        persona=connection.ops.quote_name(Persona._meta.db_table),
        turn=connection.ops.quote_name(Turn._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [dialogue_id])
        row = cursor.fetchone()
    if row is None:
        raise Dialogue.DoesNotExist(f"dialogue {dialogue_id} does not exist")
    n_dialogue, n_run = len(_DIALOGUE_FIELDS), len(_RUN_FIELDS)
    n_scenario = len(_SCENARIO_FIELDS)
    dialogue = Dialogue.from_db(connection.alias, _DIALOGUE_FIELDS, row[:n_dialogue])
    dialogue.run = GenerationRun.from_db(
        connection.alias, _RUN_FIELDS, row[n_dialogue : n_dialogue + n_run]
    )
    scenario_values = row[n_dialogue + n_run : n_dialogue + n_run + n_scenario]
    dialogue.scenario = Scenario.from_db(connection.alias, _SCENARIO_FIELDS, scenario_values)
    persona_rows, turn_rows = row[-2], row[-1]
    if isinstance(persona_rows, str):  # json (not jsonb) may come back undecoded
        persona_rows, turn_rows = json.loads(persona_rows), json.loads(turn_rows)
    personas = {}
    for values in persona_rows:
        persona = Persona.from_db(connection.alias, _PERSONA_FIELDS, values)
        personas[persona.position] = persona
    return dialogue, personas, [tuple(t) for t in turn_rows]


def _generate_turns(*, dialogue_id: int, owner: str) -> None:
    dialogue, personas, past = _dialogue_load(dialogue_id=dialogue_id)
    run, scenario = dialogue.run, dialogue.scenario
    if len(personas) != 2 or sum(p.opens for p in personas.values()) != 1:
        _dialogue_fail(
            dialogue=dialogue, owner=owner, reason="The scenario needs two personas, one opening."
        )
        return
    opener = next(p for p in personas.values() if p.opens)
    other = next(p for p in personas.values() if not p.opens)
    try:
        opening = rules.render_template(
            scenario.opening_instruction,
            topic=dialogue.topic,
            scenario=scenario.name,
            persona=opener.name,
            partner=other.name,
        )
    except (KeyError, IndexError, ValueError) as exc:
        _dialogue_fail(
            dialogue=dialogue, owner=owner, reason=f"Bad opening instruction template: {exc}"
        )
        return
    client = get_client(run.provider)
    slots = (
        gate.request_gate(run_id=dialogue.run_id, limit=run.max_in_flight)
        if requests_gated()
        else None
    )
    # Loaded once: while we hold the lease nobody else adds turns, so the list stays current.
    turns = [rules.PastTurn(speaker_position, text) for speaker_position, text in past]
    attempts = 0

    def still_ours() -> bool:
        # The lease was renewed by the save of the previous turn (or the acquire) just before
        # this call; retries and a long wait for a request slot renew again, and notice a
        # cancellation in between.
        nonlocal attempts
        attempts += 1
        return attempts == 1 or dialogue_renew_lease(dialogue_id=dialogue_id, owner=owner)

    while True:
        position = len(turns)
        if position >= scenario.max_turns:
            _dialogue_complete(dialogue=dialogue, owner=owner, reason="turn limit reached")
            return
        # Alternate with whoever spoke last (robust to hand-edited data); the opener starts.
        speaker = (
            (other if turns[-1].speaker_position == opener.position else opener)
            if turns
            else opener
        )
        partner = other if speaker is opener else opener
        messages = rules.build_messages(
            speaker=rules.Speaker(speaker.position, speaker.name, speaker.system_prompt),
            opener_position=opener.position,
            opening_instruction=opening,
            turns=turns,
        )
        request = ChatRequest(
            model=run.model_override or speaker.model or settings.SYNTHREVIEW_LLM_MODEL,
            messages=messages,
            temperature=(
                run.temperature_override
                if run.temperature_override is not None
                else speaker.temperature
            ),
            max_tokens=speaker.max_tokens,
            context={
                "scenario": scenario.slug,
                "topic": dialogue.topic,
                "position": position,
                "variant": run.seed + dialogue.index,
                "end_marker": scenario.end_marker,
            },
        )
        # The last turn the cap allows: hand the window slot over now, so the successor is
        # received, leased and queued for a request slot while this call runs, instead of
        # starting only after it (dialogues of one length would otherwise leave a burst of
        # slots idle each time they finish together).
        if (
            position == scenario.max_turns - 1
            and _may_hand_over(dialogue)
            and not _dialogue_hand_over(dialogue=dialogue, owner=owner)
        ):
            break
        _release_connection()
        attempts = 0
        try:
            outcome = complete_with_retries(client, request, before_attempt=still_ours, slots=slots)
        except Aborted:
            _usage_rollup(dialogue_id=dialogue_id)
            return  # cancelled, regenerated or taken over: whoever changed it owns it now
        except PermanentLLMError as exc:
            _dialogue_fail(dialogue=dialogue, owner=owner, reason=exc.reason)
            return
        result = outcome.result
        verdict = rules.assess(
            raw_text=result.text,
            finish_reason=result.finish_reason,
            speaker_name=speaker.name,
            partner_name=partner.name,
            previous=[turn.text for turn in turns],
            end_marker=scenario.end_marker,
            position=position,
            min_turns=scenario.min_turns,
            max_turns=scenario.max_turns,
        )
        cost = _cost(result.model, result.prompt_tokens, result.completion_tokens)
        if connection.vendor == "postgresql":
            turn_values = _turn_values(
                position=position,
                speaker=speaker,
                result=result,
                retries=outcome.retries,
                verdict=verdict,
            )
            if verdict.stop_reason:
                # The last turn, the dialogue's end and the hand-over of its window slot in
                # one statement (see _dialogue_finish).
                if _dialogue_finish(
                    dialogue=dialogue,
                    owner=owner,
                    fields={"status": Dialogue.Status.COMPLETE, "stop_reason": verdict.stop_reason},
                    turn=turn_values,
                    usage=(result.prompt_tokens, result.completion_tokens, cost),
                ):
                    return
                break
            # The common case (the dialogue goes on) in one statement and one round trip.
            if not _turn_save_continuing(
                dialogue_id=dialogue_id,
                owner=owner,
                turn=turn_values,
                usage=(result.prompt_tokens, result.completion_tokens, cost),
            ):
                break
            turns.append(rules.PastTurn(speaker.position, verdict.text))
            continue
        with transaction.atomic():
            # One conditional UPDATE locks the row, checks we still hold the lease (not
            # cancelled, regenerated or taken over), renews it for the next call and adds the
            # turn's usage.
            held = Dialogue.objects.filter(
                pk=dialogue_id, lease_owner=owner, status=Dialogue.Status.GENERATING
            ).update(
                lease_expires_at=timezone.now()
                + timedelta(seconds=settings.SYNTHREVIEW_LEASE_SECONDS),
                pending_prompt_tokens=F("pending_prompt_tokens") + result.prompt_tokens,
                pending_completion_tokens=F("pending_completion_tokens") + result.completion_tokens,
                pending_cost_usd=F("pending_cost_usd") + cost,
            )
            if not held:
                break
            Turn.objects.create(
                dialogue_id=dialogue_id,
                position=position,
                persona=speaker,
                side=speaker.side,
                original_text=verdict.text,
                text=verdict.text,
                model=result.model[:200],
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_ms=result.latency_ms,
                finish_reason=result.finish_reason[:50],
                retries=min(outcome.retries, 32767),
                warnings=verdict.warnings,
            )
            if verdict.stop_reason:
                _dialogue_complete(dialogue=dialogue, owner=owner, reason=verdict.stop_reason)
                return
        turns.append(rules.PastTurn(speaker.position, verdict.text))
    # The lease was lost between the call and the save: keep the usage of what was saved.
    _usage_rollup(dialogue_id=dialogue_id)


# The INSERT of a generated turn from the row a data-modifying CTE `held` returned: nothing is
# inserted unless that UPDATE found the lease still ours.
_TURN_INSERT_FROM_HELD = """
INSERT INTO {turn} (
    dialogue_id, position, persona_id, side, original_text, text, version, model,
    prompt_tokens, completion_tokens, latency_ms, finish_reason, retries, warnings,
    created_at, updated_at, discarded_at
)
SELECT id, %(position)s, %(persona_id)s, %(side)s, %(text)s, %(text)s, 1, %(model)s,
    %(prompt_tokens)s, %(completion_tokens)s, %(latency_ms)s, %(finish_reason)s, %(retries)s,
    %(warnings)s::jsonb, %(now)s, %(now)s, NULL
FROM held
"""

_TURN_SAVE_SQL = """
WITH held AS (
    UPDATE {dialogue}
    SET lease_expires_at = %(lease_expires_at)s,
        pending_prompt_tokens = pending_prompt_tokens + %(usage_prompt)s,
        pending_completion_tokens = pending_completion_tokens + %(usage_completion)s,
        pending_cost_usd = pending_cost_usd + %(usage_cost)s
    WHERE id = %(dialogue_id)s AND lease_owner = %(owner)s AND status = %(generating)s
    RETURNING id
)
"""


def _turn_values(
    *, position: int, speaker: Persona, result: ChatResult, retries: int, verdict: rules.Verdict
) -> dict:
    """A generated turn's columns, as the parameters of `_TURN_INSERT_FROM_HELD`."""
    return {
        "position": position,
        "persona_id": speaker.pk,
        "side": speaker.side,
        "text": verdict.text,
        "model": result.model[:200],
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency_ms": result.latency_ms,
        "finish_reason": result.finish_reason[:50],
        "retries": min(retries, 32767),
        "warnings": json.dumps(list(verdict.warnings)),
    }


def _turn_save_continuing(
    *, dialogue_id: int, owner: str, turn: dict, usage: tuple[int, int, Decimal]
) -> bool:
    """Save a turn that does not end the dialogue; False if the lease was lost meanwhile.

    The same effect as the ORM transaction in `_generate_turns` (conditional UPDATE of the
    dialogue that checks and renews the lease and adds the usage, then the INSERT of the turn),
    as one PostgreSQL statement in autocommit: the INSERT reads the UPDATE's RETURNING, so no
    turn is written unless the lease is still ours, and the statement is atomic on its own.
    One round trip instead of four (BEGIN, UPDATE, INSERT, COMMIT), and no ORM query
    compilation, on the path every turn takes.
    """
    now = timezone.now()
    sql = (_TURN_SAVE_SQL + _TURN_INSERT_FROM_HELD + "RETURNING id").format(
        dialogue=connection.ops.quote_name(Dialogue._meta.db_table),
        turn=connection.ops.quote_name(Turn._meta.db_table),
    )
    params = {
        **turn,
        **_held_params(dialogue_id=dialogue_id, owner=owner, usage=usage),
        "now": now,
        "lease_expires_at": now + timedelta(seconds=settings.SYNTHREVIEW_LEASE_SECONDS),
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def _held_params(
    *, dialogue_id: int, owner: str, usage: tuple[int, int, Decimal] = (0, 0, Decimal("0"))
) -> dict:
    """Parameters of a `held` CTE: the dialogue while `owner` holds its lease, the usage to add."""
    return {
        "dialogue_id": dialogue_id,
        "owner": owner,
        "generating": Dialogue.Status.GENERATING.value,
        "usage_prompt": usage[0],
        "usage_completion": usage[1],
        "usage_cost": usage[2],
    }


def _usage_rollup(*, dialogue_id: int) -> None:
    """Move the dialogue's pending usage and its outcome into the run's totals, exactly once.

    Runs in its own short transaction after the dialogue's status change has committed, so the
    run's row (shared by every worker thread) is locked for one statement and never on the path
    that hands the next dialogue to a worker. The dialogue row lock plus `counted_in_run` and
    the zeroed pending fields make repeated or concurrent calls harmless; the sweep calls it
    for dialogues a crash left uncounted.
    """
    if connection.vendor == "postgresql":
        _usage_rollup_statement(dialogue_id=dialogue_id)
        return
    with transaction.atomic():
        row = (
            Dialogue.objects.select_for_update()
            .filter(pk=dialogue_id)
            .values(
                "run_id",
                "status",
                "counted_in_run",
                "pending_prompt_tokens",
                "pending_completion_tokens",
                "pending_cost_usd",
            )
            .first()
        )
        if row is None:
            return
        finished = row["status"] in (Dialogue.Status.COMPLETE, Dialogue.Status.FAILED)
        count_now = finished and not row["counted_in_run"]
        prompt, completion, cost = (
            row["pending_prompt_tokens"],
            row["pending_completion_tokens"],
            row["pending_cost_usd"],
        )
        if not (prompt or completion or cost or count_now):
            return
        Dialogue.objects.filter(pk=dialogue_id).update(
            pending_prompt_tokens=0,
            pending_completion_tokens=0,
            pending_cost_usd=Decimal("0"),
            counted_in_run=row["counted_in_run"] or finished,
        )
        done = int(count_now and row["status"] == Dialogue.Status.COMPLETE)
        GenerationRun.objects.filter(pk=row["run_id"]).update(
            prompt_tokens=F("prompt_tokens") + prompt,
            completion_tokens=F("completion_tokens") + completion,
            cost_usd=F("cost_usd") + cost,
            done_count=F("done_count") + done,
            failed_count=F("failed_count") + int(count_now) - done,
        )


_USAGE_ROLLUP_SQL = """
WITH old AS (
    SELECT id, run_id, status, counted_in_run,
           pending_prompt_tokens AS prompt, pending_completion_tokens AS completion,
           pending_cost_usd AS cost,
           status IN (%(complete)s, %(failed)s) AND NOT counted_in_run AS count_now
    FROM {dialogue} WHERE id = %(id)s FOR UPDATE
), cleared AS (
    UPDATE {dialogue} AS d
    SET pending_prompt_tokens = 0, pending_completion_tokens = 0, pending_cost_usd = 0,
        counted_in_run = old.counted_in_run OR old.status IN (%(complete)s, %(failed)s)
    FROM old
    WHERE d.id = old.id
      AND (old.prompt <> 0 OR old.completion <> 0 OR old.cost <> 0 OR old.count_now)
    RETURNING old.run_id, old.prompt, old.completion, old.cost, old.count_now,
              old.status = %(complete)s AS complete
)
UPDATE {run} AS r
SET prompt_tokens = r.prompt_tokens + cleared.prompt,
    completion_tokens = r.completion_tokens + cleared.completion,
    cost_usd = r.cost_usd + cleared.cost,
    done_count = r.done_count + (cleared.count_now AND cleared.complete)::int,
    failed_count = r.failed_count + (cleared.count_now AND NOT cleared.complete)::int
FROM cleared
WHERE r.id = cleared.run_id
"""


def _usage_rollup_statement(*, dialogue_id: int) -> None:
    """`_usage_rollup` as one PostgreSQL statement (autocommit: its own transaction).

    The dialogue row is locked by the first CTE (`FOR UPDATE`) and read there; the second
    clears what it read only if there was something to move; the run is updated from what
    was cleared. A concurrent or repeated call waits for the lock, then finds nothing to move.
    One round trip instead of five, once per dialogue on the path between a dialogue
    finishing and its task acknowledging.
    """
    sql = _USAGE_ROLLUP_SQL.format(
        dialogue=connection.ops.quote_name(Dialogue._meta.db_table),
        run=connection.ops.quote_name(GenerationRun._meta.db_table),
    )
    params = {
        "id": dialogue_id,
        "complete": Dialogue.Status.COMPLETE.value,
        "failed": Dialogue.Status.FAILED.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _dialogue_complete(*, dialogue: Dialogue, owner: str, reason: str) -> None:
    _dialogue_finish(
        dialogue=dialogue,
        owner=owner,
        fields={"status": Dialogue.Status.COMPLETE, "stop_reason": reason[:200]},
    )


def _dialogue_fail(*, dialogue: Dialogue, owner: str, reason: str) -> None:
    log.warning("dialogue %s failed: %s", dialogue.pk, reason)
    _dialogue_finish(
        dialogue=dialogue,
        owner=owner,
        fields={"status": Dialogue.Status.FAILED, "failure_reason": reason},
    )


def _dialogue_finish(
    *,
    dialogue: Dialogue,
    owner: str,
    fields: dict,
    turn: dict | None = None,
    usage: tuple[int, int, Decimal] = (0, 0, Decimal("0")),
) -> bool:
    """Close the dialogue and hand its window slot to the next one, in one commit.

    Handing the slot over in the same transaction keeps "dispatched + generating" constant at
    every commit, so a concurrent counting dispatch (launch, sweep) never sees a gap to fill,
    and the hand-over needs neither a count nor the run's row lock. Counters and usage follow
    right after the commit (`_usage_rollup`). On PostgreSQL the dialogue's last turn (`turn`,
    `_turn_values`, with its `usage`) is saved by the same statement. False if the lease was
    no longer ours: nothing was written.
    """
    hand_over = _may_hand_over(dialogue)
    if connection.vendor == "postgresql":
        won, successors = _dialogue_finish_statement(
            dialogue_id=dialogue.pk,
            owner=owner,
            fields=fields,
            turn=turn,
            usage=usage,
            claim=_successors_to_claim(dialogue) if hand_over else 0,
        )
        if not won:
            return False
        # The same callbacks, in the same order, as the ORM path registers (after the commit).
        transaction.on_commit(lambda: _forget_lease(dialogue.pk))
        if successors:
            transaction.on_commit(lambda: _enqueue(successors))
            transaction.on_commit(lambda: setattr(_handoff, "done", True))
        transaction.on_commit(lambda: _usage_rollup(dialogue_id=dialogue.pk))
        return True
    if turn is not None:
        raise ValueError("a last turn is saved with the finish on PostgreSQL only")
    with transaction.atomic():
        won = Dialogue.objects.filter(
            pk=dialogue.pk, lease_owner=owner, status=Dialogue.Status.GENERATING
        ).update(
            finished_at=timezone.now(),
            lease_owner="",
            lease_expires_at=None,
            **({"handed_over": True} if hand_over else {}),
            **fields,
        )
        if not won:
            return False
        # Released with the status change: no separate release query afterwards.
        transaction.on_commit(lambda: _forget_lease(dialogue.pk))
        if hand_over and _dispatch_handoff(
            run_id=dialogue.run_id, claim=_successors_to_claim(dialogue)
        ):
            transaction.on_commit(lambda: setattr(_handoff, "done", True))
        transaction.on_commit(lambda: _usage_rollup(dialogue_id=dialogue.pk))
    return True


_DIALOGUE_FINISH_SQL = """
WITH held AS (
    UPDATE {dialogue}
    SET status = %(status)s,
        stop_reason = coalesce(%(stop_reason)s, stop_reason),
        failure_reason = coalesce(%(failure_reason)s, failure_reason),
        finished_at = %(now)s, lease_owner = '', lease_expires_at = NULL,
        handed_over = handed_over OR %(hand_over)s,
        pending_prompt_tokens = pending_prompt_tokens + %(usage_prompt)s,
        pending_completion_tokens = pending_completion_tokens + %(usage_completion)s,
        pending_cost_usd = pending_cost_usd + %(usage_cost)s
    WHERE id = %(dialogue_id)s AND lease_owner = %(owner)s AND status = %(generating)s
    RETURNING id, run_id
), saved AS (
    {turn_insert}
    WHERE %(with_turn)s
    RETURNING 1
), {successor}
SELECT (SELECT count(*) FROM held), array(SELECT id FROM claimed)
"""

# CTEs claiming the run's first %(claim)s undispatched dialogues for `held`'s run if %(hand_over)s:
# SKIP LOCKED passes over a row another finishing dialogue is claiming, and locking re-checks
# the row is still undispatched.
_SUCCESSOR_CLAIM = """
successor AS (
    SELECT d.id
    FROM {dialogue} AS d JOIN {run} AS r ON r.id = d.run_id
    WHERE %(hand_over)s AND d.run_id = (SELECT run_id FROM held)
      AND r.status = ANY(%(active)s)
      AND d.status = %(pending)s AND d.dispatched_at IS NULL
    ORDER BY d.index
    LIMIT %(claim)s
    FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE {dialogue} AS d SET dispatched_at = %(now)s
    FROM successor WHERE d.id = successor.id
    RETURNING d.id
)
"""

_HAND_OVER_SQL = """
WITH held AS (
    UPDATE {dialogue} SET handed_over = true
    WHERE id = %(dialogue_id)s AND lease_owner = %(owner)s AND status = %(generating)s
      AND NOT handed_over
    RETURNING id, run_id
), {successor}
SELECT (SELECT count(*) FROM held), array(SELECT id FROM claimed)
"""

_FINISH_TURN_DEFAULTS = dict.fromkeys(
    (
        "position", "persona_id", "side", "text", "model", "prompt_tokens", "completion_tokens",
        "latency_ms", "finish_reason", "retries", "warnings",
    )
)  # fmt: skip


def _dialogue_finish_statement(
    *,
    dialogue_id: int,
    owner: str,
    fields: dict,
    turn: dict | None,
    usage: tuple[int, int, Decimal],
    claim: int,
) -> tuple[bool, list[int]]:
    """`_dialogue_finish` as one PostgreSQL statement: (won, the successors claimed).

    The conditional UPDATE checks the lease and closes the dialogue; the last turn is inserted
    from its RETURNING (so only if it won); the successors, the run's first `claim`
    undispatched dialogues nobody else is claiming (`SKIP LOCKED`; the lock re-checks they are
    still undispatched), are stamped dispatched. The same effect as the ORM path's BEGIN,
    UPDATE, INSERT, SELECT ... FOR UPDATE, UPDATE, COMMIT, in one round trip, once per dialogue.
    """
    unknown = set(fields) - {"status", "stop_reason", "failure_reason"}
    if unknown:
        raise ValueError(f"cannot set {sorted(unknown)} when finishing a dialogue")
    sql = _DIALOGUE_FINISH_SQL.format(
        dialogue=connection.ops.quote_name(Dialogue._meta.db_table),
        successor=_successor_claim_sql(),
        turn_insert=_TURN_INSERT_FROM_HELD.format(
            turn=connection.ops.quote_name(Turn._meta.db_table)
        ).strip(),
    )
    params = {
        **_FINISH_TURN_DEFAULTS,
        **(turn or {}),
        "with_turn": turn is not None,
        "status": str(fields["status"]),
        "stop_reason": fields["stop_reason"][:200] if "stop_reason" in fields else None,
        "failure_reason": fields.get("failure_reason"),
        "now": timezone.now(),
        **_held_params(dialogue_id=dialogue_id, owner=owner, usage=usage),
        **_successor_claim_params(claim),
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        held, successors = cursor.fetchone()
    return bool(held), list(successors)


def _successor_claim_sql() -> str:
    return _SUCCESSOR_CLAIM.format(
        dialogue=connection.ops.quote_name(Dialogue._meta.db_table),
        run=connection.ops.quote_name(GenerationRun._meta.db_table),
    ).strip()


def _successor_claim_params(claim: int) -> dict:
    return {
        "hand_over": claim > 0,
        "claim": max(claim, 1),
        "active": [str(status) for status in GenerationRun.ACTIVE_STATUSES],
        "pending": Dialogue.Status.PENDING.value,
    }


def _successors_to_claim(dialogue: Dialogue) -> int:
    """How many dialogues one handing over dispatches: one, or two in the run's last stretch.

    The last dialogues to be dispatched would otherwise run their whole length after the
    others have finished, with most request slots idle (at 64 slots, about 4 % of a run of
    500 six-turn dialogues). From two windows before the end, each hand-over dispatches two,
    so the run's last window opens early and its turns overlap the others'. That opens at
    most one window more than usual; the request gate still caps the calls.
    """
    run = dialogue.run
    window = run_window(max_in_flight=run.max_in_flight)
    return 2 if dialogue.index >= run.requested_count - 2 * window else 1


def _may_hand_over(dialogue: Dialogue) -> bool:
    """Whether this dialogue still has a window slot to hand over.

    Regenerations run outside the window; with no broker the outermost run_dispatch loop
    refills instead (no recursion); and a dialogue hands over once.
    """
    return dialogue.resume_from is None and not dialogue.handed_over and not tasks_run_inline()


def _dialogue_hand_over(*, dialogue: Dialogue, owner: str) -> bool:
    """Hand the dialogue's window slot to the run's next dialogue before the dialogue ends.

    Marks the dialogue handed over (checking the lease is still ours) and claims and enqueues
    its successors (`_successors_to_claim`), in one commit. False if the lease was lost: stop.
    """
    if connection.vendor == "postgresql":
        sql = _HAND_OVER_SQL.format(
            dialogue=connection.ops.quote_name(Dialogue._meta.db_table),
            successor=_successor_claim_sql(),
        )
        params = {
            **_held_params(dialogue_id=dialogue.pk, owner=owner),
            "now": timezone.now(),
            **_successor_claim_params(_successors_to_claim(dialogue)),
        }
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            won, successors = cursor.fetchone()
        if won and successors:
            transaction.on_commit(lambda: _enqueue(list(successors)))
    else:
        with transaction.atomic():
            won = Dialogue.objects.filter(
                pk=dialogue.pk,
                lease_owner=owner,
                status=Dialogue.Status.GENERATING,
                handed_over=False,
            ).update(handed_over=True)
            successors = (
                _dispatch_handoff(run_id=dialogue.run_id, claim=_successors_to_claim(dialogue))
                if won
                else []
            )
    if not won:
        return False
    dialogue.handed_over = True
    if successors:
        # The successors are open until they end, so this task cannot close the run.
        transaction.on_commit(lambda: setattr(_handoff, "done", True))
    return True


def _forget_lease(dialogue_id: int) -> None:
    with _held_lock:
        _held_leases.pop(dialogue_id, None)


def _dispatch_handoff(*, run_id: int, claim: int = 1) -> list[int]:
    """Claim the run's next `claim` undispatched dialogues (if the run is active); each is
    enqueued on commit. Returns the ids claimed."""
    candidates = (
        Dialogue.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(
            run_id=run_id,
            run__status__in=GenerationRun.ACTIVE_STATUSES,
            status=Dialogue.Status.PENDING,
            dispatched_at__isnull=True,
        )
        .order_by("index")
        .values_list("pk", flat=True)
    )
    claimed = []
    for pk in candidates[: claim + 4]:
        if Dialogue.objects.filter(pk=pk, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        ):
            transaction.on_commit(lambda pk=pk: _enqueue([pk]))
            claimed.append(pk)
            if len(claimed) == claim:
                break
    return claimed


# --- Run lifecycle ------------------------------------------------------------------------------


def run_finalize(*, run_id: int) -> str | None:
    """Close the run once no dialogue is open; returns the final status if this call closed it."""
    counts = Dialogue.objects.filter(run_id=run_id).aggregate(
        open=Count("pk", filter=Q(status__in=OPEN_STATUSES)),
        complete=Count("pk", filter=Q(status=Dialogue.Status.COMPLETE)),
        failed=Count("pk", filter=Q(status=Dialogue.Status.FAILED)),
    )
    if counts["open"]:
        return None
    error = ""
    if counts["failed"] and not counts["complete"]:
        status = GenerationRun.Status.FAILED
        first = (
            Dialogue.objects.filter(run_id=run_id, status=Dialogue.Status.FAILED)
            .order_by("index")
            .values_list("failure_reason", flat=True)
            .first()
        )
        error = f"Every dialogue failed. First reason: {first}"
    elif counts["failed"]:
        status = GenerationRun.Status.FINISHED_WITH_FAILURES
    else:
        status = GenerationRun.Status.FINISHED
    closed = GenerationRun.objects.filter(
        pk=run_id, status__in=GenerationRun.ACTIVE_STATUSES
    ).update(status=status, finished_at=timezone.now(), error=error)
    return status if closed else None


def run_cancel(*, run: GenerationRun) -> int:
    """Stop a run: its open dialogues are cancelled, finished ones stay. Returns how many.

    A worker in the middle of a dialogue notices at its next lease renewal (before every LLM
    call or retry) and at the turn save, so work stops within one LLM call.
    """
    now = timezone.now()
    with transaction.atomic():
        # Dialogue rows before the run row: the same lock order as a finishing dialogue.
        cancelled = Dialogue.objects.filter(run_id=run.pk, status__in=OPEN_STATUSES).update(
            status=Dialogue.Status.CANCELLED, stop_reason="cancelled", finished_at=now
        )
        updated = GenerationRun.objects.filter(
            pk=run.pk, status__in=GenerationRun.ACTIVE_STATUSES
        ).update(status=GenerationRun.Status.CANCELLED, finished_at=now)
    if updated:
        run.status, run.finished_at = GenerationRun.Status.CANCELLED, now
    return cancelled


# --- Regeneration (called by the review screen) ---------------------------------------------------


def dialogue_regenerate_from(*, dialogue: Dialogue, position: int) -> int:
    """Discard live turns after `position` and have a worker continue from there.

    Must run inside the caller's transaction: the discarded turns, the reset and the enqueue
    (on commit) happen together or not at all. The conversation so far is the turns' current
    `text`, so a reviewer's correction of turn `position` is what the next persona answers.
    Returns how many turns were discarded.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("dialogue_regenerate_from must be called inside transaction.atomic()")
    if position < 0:
        raise ValueError("position must be >= 0")
    now = timezone.now()
    locked = Dialogue.objects.select_for_update().get(pk=dialogue.pk)
    if (
        locked.status == Dialogue.Status.GENERATING
        and locked.lease_owner
        and locked.lease_expires_at
        and locked.lease_expires_at > now
        and not lease_owner_is_dead(locked.lease_owner)
    ):
        raise GenerationBusy(
            "This dialogue is being generated right now. Wait for it to finish, then try again."
        )
    discarded = Turn.objects.filter(
        dialogue_id=locked.pk, discarded_at__isnull=True, position__gt=position
    ).update(discarded_at=now)
    counter = {
        Dialogue.Status.COMPLETE: "done_count",
        Dialogue.Status.FAILED: "failed_count",
    }.get(locked.status)
    if counter and locked.counted_in_run:
        GenerationRun.objects.filter(pk=locked.run_id).update(
            **{counter: Greatest(F(counter) - 1, Value(0))}
        )
    fields = {
        "status": Dialogue.Status.PENDING,
        "stop_reason": "",
        "failure_reason": "",
        "lease_owner": "",
        "lease_expires_at": None,
        "resume_from": position + 1,
        "finished_at": None,
        "dispatched_at": now,
        "counted_in_run": False,
    }
    Dialogue.objects.filter(pk=locked.pk).update(**fields)
    for name, value in fields.items():
        setattr(dialogue, name, value)
    transaction.on_commit(lambda: _enqueue([locked.pk]))
    return discarded


# --- Recovery sweep -------------------------------------------------------------------------------


def dialogues_sweep() -> int:
    """Re-enqueue dialogues whose worker died; top up and close runs. Returns re-enqueued count.

    Runs every SYNTHREVIEW_SWEEP_SECONDS in every worker (generation.worker). Each re-enqueue is
    claimed with a conditional UPDATE, so several workers sweeping at once enqueue it once.
    """
    now = timezone.now()
    requeue: list[int] = []
    # Lapsed leases, leases nobody holds (a task that crashed on an unexpected error released
    # it), and leases of processes on this host that are gone.
    candidates = Dialogue.objects.filter(status=Dialogue.Status.GENERATING).filter(
        Q(lease_expires_at__lt=now)
        | Q(lease_expires_at__isnull=True)
        | Q(lease_owner="")
        | Q(lease_owner__startswith=f"{HOSTNAME}:")
    )
    for pk, owner, expires in candidates.values_list("pk", "lease_owner", "lease_expires_at"):
        if expires and expires >= now and not lease_owner_is_dead(owner):
            continue
        claimed = Dialogue.objects.filter(
            pk=pk, status=Dialogue.Status.GENERATING, lease_owner=owner
        ).update(
            status=Dialogue.Status.PENDING, lease_owner="", lease_expires_at=None, dispatched_at=now
        )
        if claimed:
            log.warning("re-enqueueing dialogue %s: lease of %s lapsed", pk, owner or "nobody")
            requeue.append(pk)
    stale_before = now - timedelta(seconds=settings.SYNTHREVIEW_DISPATCH_STALE_SECONDS)
    for pk in Dialogue.objects.filter(
        status=Dialogue.Status.PENDING, dispatched_at__lt=stale_before
    ).values_list("pk", flat=True):
        if Dialogue.objects.filter(
            pk=pk, status=Dialogue.Status.PENDING, dispatched_at__lt=stale_before
        ).update(dispatched_at=now):
            requeue.append(pk)
    _enqueue(requeue)
    # Outcomes or usage a crash left out of the run totals (normally rolled up on commit).
    leftovers = Dialogue.objects.filter(
        Q(status__in=(Dialogue.Status.COMPLETE, Dialogue.Status.FAILED), counted_in_run=False)
        | Q(status=Dialogue.Status.CANCELLED, pending_prompt_tokens__gt=0)
    ).filter(finished_at__lt=now - timedelta(seconds=settings.SYNTHREVIEW_SWEEP_SECONDS))
    for pk in leftovers.values_list("pk", flat=True)[:1000]:
        _usage_rollup(dialogue_id=pk)
    for run_id in GenerationRun.objects.filter(
        status__in=GenerationRun.ACTIVE_STATUSES
    ).values_list("pk", flat=True):
        run_dispatch(run_id=run_id)
        run_finalize(run_id=run_id)
    return len(requeue)


# --- Example scenarios ----------------------------------------------------------------------------

EXAMPLES_PATH = Path(__file__).resolve().parent / "data" / "example_scenarios.json"


def scenario_upsert_examples(*, path: Path = EXAMPLES_PATH) -> list[Scenario]:
    """Create or update the shipped example scenarios (matched by slug) and their personas."""
    data = json.loads(path.read_text(encoding="utf-8"))
    scenarios = []
    with transaction.atomic():
        for item in data:
            personas = item.pop("personas")
            scenario, _ = Scenario.objects.update_or_create(slug=item["slug"], defaults=item)
            for persona in personas:
                Persona.objects.update_or_create(
                    scenario=scenario, position=persona["position"], defaults=persona
                )
            scenarios.append(scenario)
    return scenarios
