"""Admission: when a run's first dialogues start, so a rate-limited endpoint sees a steady mix.

Launched all at once, a run's first window of dialogues moves through its turns in step: every
dialogue on its short first calls together (the requests-per-minute budget runs out while the
tokens go unused), then on its long last calls together (the tokens run out while requests go
unused), and the waves repeat as successors take the finished dialogues' places. Started one
after another, over the time the endpoint's limits take to serve one window of dialogues, the
window holds dialogues at every turn at once, and both budgets stay in use. A dialogue that
starts later (a finished dialogue's successor, a sweep's top-up) starts at once: it takes the
place, and so the stage, of the one that ended.

Nothing changes for a run whose endpoints configure no per-minute limit (limits learned from a
server's headers are not known at launch), on the demo provider, or without a Redis broker.
"""

from __future__ import annotations

import math

from generation.models import GenerationRun, Persona

from . import dispatch
from .endpoints import call_target
from .pacing import CHARS_PER_TOKEN


def start_spacing(*, run: GenerationRun) -> float:
    """Seconds between the starts of the run's first dialogues (0: all at once).

    The time one dialogue takes of its busiest endpoint's limits, at most: its calls against
    requests per minute, its estimated tokens (as pacing estimates a call, before it is made)
    against tokens per minute.
    """
    if run.provider == "demo" or not dispatch.requests_gated():
        return 0.0
    personas = list(run.scenario.personas.select_related("endpoint").order_by("position"))
    calls = dialogue_calls(run=run, personas=personas)
    seconds = 0.0
    for endpoint, (requests, tokens) in calls.items():
        if endpoint.requests_per_minute:
            seconds = max(seconds, requests * 60 / endpoint.requests_per_minute)
        if endpoint.tokens_per_minute:
            seconds = max(seconds, tokens * 60 / endpoint.tokens_per_minute)
    return seconds


def dialogue_calls(*, run: GenerationRun, personas: list[Persona]) -> dict:
    """endpoint -> (calls, estimated tokens) of one dialogue of `max_turns` turns, each turn's
    prompt holding the turns before it at their `max_tokens`. The run's scenario has passed
    `scenario_check_ready` (two personas, one opening)."""
    scenario = run.scenario
    opener = next(p for p in personas if p.opens)
    other = next(p for p in personas if not p.opens)
    targets = {p.pk: call_target(run=run, persona=p)[0] for p in personas}
    calls: dict = {}
    history = 0
    for turn in range(scenario.max_turns):
        speaker = opener if turn % 2 == 0 else other
        prompt = len(speaker.system_prompt) + len(scenario.opening_instruction)
        tokens = math.ceil(prompt / CHARS_PER_TOKEN) + history + speaker.max_tokens
        endpoint = targets[speaker.pk]
        requests_so_far, tokens_so_far = calls.get(endpoint, (0, 0))
        calls[endpoint] = (requests_so_far + 1, tokens_so_far + tokens)
        history += speaker.max_tokens
    return calls
