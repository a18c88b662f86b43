"""One dialogue's turns: the body of the `generation.generate_dialogue` task.

Safe to run any number of times and concurrently: only the lease holder generates, each turn is
saved as soon as it arrives (by a statement that first checks the lease is still ours and
renews it), and the stop decision is saved with the turn that triggered it. A re-run continues
after the last saved turn; a finished dialogue's task returns at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from generation import rules
from generation.llm import ChatRequest, PermanentLLMError
from generation.llm.retry import Aborted
from generation.models import Dialogue, GenerationRun, Persona, Turn

from . import dispatch, gate, statements
from .endpoints import EndpointOutcome, call_target, endpoint_complete
from .finish import Finished, dialogue_complete, dialogue_fail, run_finalize
from .leases import (
    connection_release,
    lease_acquire,
    lease_expiry,
    lease_owner_new,
    lease_release,
    lease_renew,
)
from .usage import Usage, usage_rollup


@dataclass(frozen=True)
class Generated:
    """What a task run did: the dialogue's run, and the dialogue it handed its slot to."""

    run_id: int
    successor: int | None = None


@dataclass(frozen=True)
class Cast:
    """The two personas of a dialogue, the opener's rendered opening instruction and each
    persona's rendered system prompt (by position)."""

    opener: Persona
    other: Persona
    opening: str
    prompts: dict[int, str]

    def next_speaker(self, turns: list[rules.PastTurn]) -> tuple[Persona, Persona]:
        """(speaker, partner): whoever did not speak last (robust to hand-edited data)."""
        if turns and turns[-1].speaker_position == self.opener.position:
            return self.other, self.opener
        return self.opener, self.other


def dialogue_generate(*, dialogue_id: int) -> Generated | None:
    """Generate the dialogue's remaining turns; close the run if this was its last dialogue.

    None if the dialogue no longer exists. A dialogue that handed its window slot to a
    successor skips the run's closing check: the successor is open, so the run is too.
    """
    owner = lease_owner_new()
    acquired = lease_acquire(dialogue_id=dialogue_id, owner=owner)
    if acquired is None:
        return None
    if not acquired.won:
        run_finalize(run_id=acquired.run_id)
        return Generated(run_id=acquired.run_id)
    try:
        dialogue, personas, past = dialogue_load(dialogue_id=dialogue_id)
        if dialogue.run.status == GenerationRun.Status.QUEUED:
            GenerationRun.objects.filter(
                pk=dialogue.run_id, status=GenerationRun.Status.QUEUED
            ).update(status=GenerationRun.Status.RUNNING, started_at=timezone.now())
        finished = _generate_turns(dialogue=dialogue, personas=personas, past=past, owner=owner)
    finally:
        lease_release(dialogue_id=dialogue_id, owner=owner)
    successor = finished.successor if finished else None
    if successor is None:
        run_finalize(run_id=dialogue.run_id)
    return Generated(run_id=dialogue.run_id, successor=successor)


def _generate_turns(
    *, dialogue: Dialogue, personas: dict[int, Persona], past: list[tuple], owner: str
) -> Finished | None:
    """The turn loop; returns how the dialogue ended, None if it stopped without ending."""
    dialogue_id = dialogue.pk
    cast = _cast(dialogue, personas)
    if isinstance(cast, str):
        return dialogue_fail(dialogue=dialogue, owner=owner, reason=cast)
    scenario = dialogue.scenario
    slots = None
    if dispatch.requests_gated():
        slots = gate.request_gate(run_id=dialogue.run_id, limit=dialogue.run.max_in_flight)
    # Loaded once: while we hold the lease nobody else adds turns, so the list stays current.
    turns = [rules.PastTurn(position, text) for position, text in past]
    while True:
        position = len(turns)
        if position >= scenario.max_turns:
            return dialogue_complete(dialogue=dialogue, owner=owner, reason="turn limit reached")
        speaker, partner = cast.next_speaker(turns)
        endpoint, model = call_target(run=dialogue.run, persona=speaker)
        request = _request(dialogue=dialogue, cast=cast, speaker=speaker, partner=partner,
                           turns=turns, model=model)  # fmt: skip
        connection_release()
        try:
            outcome = endpoint_complete(
                endpoint=endpoint,
                request=request,
                run=dialogue.run,
                before_attempt=_still_ours(dialogue_id, owner),
                slots=slots,
            )
        except Aborted:  # cancelled, regenerated or taken over: whoever changed it owns it now
            usage_rollup(dialogue_id=dialogue_id)
            return None
        except PermanentLLMError as exc:
            return dialogue_fail(dialogue=dialogue, owner=owner, reason=exc.reason)
        verdict = _assess(dialogue=dialogue, outcome=outcome, speaker=speaker, partner=partner,
                          turns=turns)  # fmt: skip
        turn = _turn(dialogue_id, position, speaker, outcome, verdict)
        usage = outcome.usage
        if verdict.stop_reason:
            finished = _dialogue_end(dialogue=dialogue, owner=owner, verdict=verdict, turn=turn,
                                     usage=usage)  # fmt: skip
            if finished is None:  # the lease was lost during the call
                usage_rollup(dialogue_id=dialogue_id)
            return finished
        if not turn_save(dialogue=dialogue, owner=owner, turn=turn, usage=usage):
            usage_rollup(dialogue_id=dialogue_id)  # keep the usage of what was saved
            return None
        turns.append(rules.PastTurn(speaker.position, verdict.text))


def _dialogue_end(
    *, dialogue: Dialogue, owner: str, verdict: rules.Verdict, turn: Turn, usage: Usage
) -> Finished | None:
    """End the dialogue with the turn that stopped it: complete, or failed if it stopped
    short of the scenario's minimum (unusable output), so it is never offered for review."""
    count, minimum = turn.position + 1, dialogue.scenario.min_turns
    if count >= minimum:
        return dialogue_complete(
            dialogue=dialogue, owner=owner, reason=verdict.stop_reason, turn=turn, usage=usage
        )
    reason = (
        f"ended after {count} turn{'s' if count != 1 else ''} ({verdict.stop_reason}), "
        f"before the scenario's minimum of {minimum}"
    )
    return dialogue_fail(dialogue=dialogue, owner=owner, reason=reason, turn=turn, usage=usage)


def dialogue_load(*, dialogue_id: int) -> tuple[Dialogue, dict[int, Persona], list[tuple]]:
    """The dialogue with its run and scenario, the personas by position, and the live turns
    as (speaker position, text) in order."""
    dialogue = Dialogue.objects.select_related("run__endpoint_override", "scenario").get(
        pk=dialogue_id
    )
    personas = {
        p.position: p
        for p in Persona.objects.filter(scenario_id=dialogue.scenario_id)
        .select_related("endpoint")
        .order_by()
    }
    past = list(
        Turn.objects.filter(dialogue_id=dialogue_id, discarded_at__isnull=True)
        .order_by("position")
        .values_list("persona__position", "text")
    )
    return dialogue, personas, past


def _cast(dialogue: Dialogue, personas: dict[int, Persona]) -> Cast | str:
    """The cast, or why the dialogue cannot be generated."""
    if len(personas) != 2 or sum(p.opens for p in personas.values()) != 1:
        return "The scenario needs two personas, one opening."
    opener = next(p for p in personas.values() if p.opens)
    other = next(p for p in personas.values() if not p.opens)
    scenario = dialogue.scenario
    values = {
        "topic": dialogue.topic,
        "scenario": scenario.name,
        "variables": dialogue.variables if isinstance(dialogue.variables, dict) else {},
    }
    try:
        opening = rules.render_template(
            scenario.opening_instruction, persona=opener.name, partner=other.name, **values
        )
    except (KeyError, IndexError, ValueError) as exc:
        return f"Bad opening instruction template: {exc}"
    prompts = {}
    for speaker, partner in ((opener, other), (other, opener)):
        try:
            prompts[speaker.position] = rules.render_template(
                speaker.system_prompt, persona=speaker.name, partner=partner.name, **values
            )
        except (KeyError, IndexError, ValueError) as exc:
            return (
                f"Bad system prompt template of {speaker.name}: {exc} "
                "(write {{ and }} for literal braces)"
            )
    return Cast(opener=opener, other=other, opening=opening, prompts=prompts)


def _request(
    *,
    dialogue: Dialogue,
    cast: Cast,
    speaker: Persona,
    partner: Persona,
    turns: list[rules.PastTurn],
    model: str,
) -> ChatRequest:
    """The call for the next turn, the conversation as `speaker` sees it.

    `context` is for the offline demo provider (HTTP providers ignore it).
    """
    run, scenario = dialogue.run, dialogue.scenario
    messages = rules.build_messages(
        speaker=rules.Speaker(speaker.position, speaker.name, cast.prompts[speaker.position]),
        opener_position=cast.opener.position,
        opening_instruction=cast.opening,
        turns=turns,
    )
    temperature = run.temperature_override
    return ChatRequest(
        model=model,
        messages=messages,
        temperature=speaker.temperature if temperature is None else temperature,
        max_tokens=speaker.max_tokens,
        context={
            "scenario": scenario.slug,
            "topic": dialogue.topic,
            "position": len(turns),
            "variant": run.seed + dialogue.index,
            "attempt": dialogue.attempts,
            "end_marker": scenario.end_marker,
            "min_turns": scenario.min_turns,
            "max_turns": scenario.max_turns,
            "speaker": speaker.name,
            "partner": partner.name,
            "variables": dialogue.variables,
        },
    )


def _still_ours(dialogue_id: int, owner: str):
    """`before_attempt` of a turn's call: renew the lease before every attempt but the first.

    The save of the previous turn (or the acquire) renewed it just before the first attempt;
    retries and a long wait for a request slot renew again, and notice a cancellation.
    """
    attempts = 0

    def still_ours() -> bool:
        nonlocal attempts
        attempts += 1
        return attempts == 1 or lease_renew(dialogue_id=dialogue_id, owner=owner)

    return still_ours


def _assess(
    *,
    dialogue: Dialogue,
    outcome: EndpointOutcome,
    speaker: Persona,
    partner: Persona,
    turns: list[rules.PastTurn],
) -> rules.Verdict:
    scenario = dialogue.scenario
    return rules.assess(
        raw_text=outcome.result.text,
        finish_reason=outcome.result.finish_reason,
        speaker_name=speaker.name,
        partner_name=partner.name,
        previous=[turn.text for turn in turns],
        end_marker=scenario.end_marker,
        position=len(turns),
        min_turns=scenario.min_turns,
        max_turns=scenario.max_turns,
    )


def _turn(
    dialogue_id: int,
    position: int,
    speaker: Persona,
    outcome: EndpointOutcome,
    verdict: rules.Verdict,
) -> Turn:
    result = outcome.result
    return Turn(
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


def turn_save(*, dialogue: Dialogue, owner: str, turn: Turn, usage: Usage) -> bool:
    """Save a turn that does not end the dialogue; False if the lease was lost meanwhile.

    The conditional UPDATE checks the lease is still ours (not cancelled, regenerated or taken
    over), renews it for the next call and writes the dialogue's new pending usage (the lease
    holder's to write: `generation.engine.usage`); the turn is inserted only if it matched.
    Two statements, no transaction: once the UPDATE has renewed a live lease, no
    regeneration, sweep or other worker can take the dialogue, and a cancel committed in
    between finds a turn whose save began before it (the unique live position rules out a
    duplicate whatever happens). Both are written out (`statements`): every turn takes
    this path, and building them through the ORM cost three times their execution.
    """
    pending = Usage.pending_of(dialogue) + usage
    if not statements.lease_renew_with_usage(
        dialogue_id=dialogue.pk,
        owner=owner,
        expires_at=lease_expiry(),
        pending=pending.as_pending(),
    ):
        return False
    statements.turn_insert(turn)
    for name, value in pending.as_pending().items():
        setattr(dialogue, name, value)
    return True
