"""Scenario services: whether one can be generated from, its topics, the shipped examples."""

from __future__ import annotations

import json
import random
from pathlib import Path

from django.db import transaction

from generation.models import Persona, Scenario, persona_sides_problem

EXAMPLES_PATH = Path(__file__).resolve().parents[1] / "data" / "example_scenarios.json"


class ScenarioNotReady(Exception):
    """The scenario cannot be generated from (e.g. it lacks its two personas)."""


def scenario_check_ready(*, scenario: Scenario) -> list[Persona]:
    """The scenario's two personas in order; ScenarioNotReady says what is missing."""
    personas = list(scenario.personas.order_by("position"))
    if len(personas) != 2:
        raise ScenarioNotReady(f"Scenario {scenario.slug!r} needs exactly two personas.")
    if sum(p.opens for p in personas) != 1:
        raise ScenarioNotReady(f"Exactly one persona of {scenario.slug!r} must open.")
    problem = persona_sides_problem([p.side for p in personas])
    if problem:
        raise ScenarioNotReady(f"Scenario {scenario.slug!r}: {problem}")
    if not scenario.topics:
        raise ScenarioNotReady(f"Scenario {scenario.slug!r} has no topics.")
    return personas


def scenario_pick_topics(*, scenario: Scenario, count: int, seed: int) -> list[str]:
    """One topic per dialogue: the list in order (cycled), or sampled with the run's seed."""
    topics = [str(t) for t in scenario.topics] or [scenario.name]
    if scenario.topic_order == Scenario.TopicOrder.SAMPLED:
        rng = random.Random(seed)
        return [rng.choice(topics) for _ in range(count)]
    return [topics[i % len(topics)] for i in range(count)]


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
