"""Writes for generation: scenarios, runs and dialogues; the engine behind them.

Import the public names from here; each lives in the module named beside it.
"""

from __future__ import annotations

from generation.engine.dispatch import requests_gated, run_dispatch, run_window
from generation.engine.finish import run_finalize
from generation.engine.leases import OPEN_STATUSES
from generation.engine.loop import dialogue_generate
from generation.engine.sweep import dialogues_sweep

from .dialogues import GenerationBusy, dialogue_regenerate_from
from .endpoints import (
    EndpointNotReady,
    EndpointTest,
    EndpointUse,
    endpoint_by_name,
    endpoint_test,
    endpoints_check,
)
from .runs import run_cancel, run_launch
from .scenarios import (
    ScenarioNotReady,
    scenario_check_ready,
    scenario_pick_topics,
    scenario_upsert_examples,
)

__all__ = [
    "OPEN_STATUSES",
    "EndpointNotReady",
    "EndpointTest",
    "EndpointUse",
    "GenerationBusy",
    "ScenarioNotReady",
    "dialogue_generate",
    "dialogue_regenerate_from",
    "dialogues_sweep",
    "endpoint_by_name",
    "endpoint_test",
    "endpoints_check",
    "requests_gated",
    "run_cancel",
    "run_dispatch",
    "run_finalize",
    "run_launch",
    "run_window",
    "scenario_check_ready",
    "scenario_pick_topics",
    "scenario_upsert_examples",
]
