"""Signals other apps listen to, so generation never imports them.

`dialogue_completed` is sent after the commit that made a dialogue complete, first generation
or regeneration alike, with `dialogue_id`, `run_id` and `regenerated` (True when the text after
a corrected turn was written again). Receivers run in the worker that finished the dialogue:
they should enqueue work (a task by name), not do it.

`endpoint_callers` is sent with `scenarios` (a list) whenever generation works out which
endpoints a run calls: the launch check (a missing key variable is refused), the launch form's
table and the run page's endpoint table. A receiver returns the other callers its app adds to
runs of those scenarios (a review judge, say) as a list of `EndpointCaller`, in one query for
every scenario at once; generation lists them beside the personas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from django.dispatch import Signal

if TYPE_CHECKING:
    from generation.models import Endpoint

dialogue_completed = Signal()
endpoint_callers = Signal()


class EndpointCaller(NamedTuple):
    """Another caller of a scenario's runs: its name on the pages, its endpoint and model."""

    scenario_id: int
    name: str
    endpoint: Endpoint
    model: str
