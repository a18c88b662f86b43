"""Signals other apps listen to, so generation never imports them.

`dialogue_completed` is sent after the commit that made a dialogue complete, first generation
or regeneration alike, with `dialogue_id`, `run_id` and `regenerated` (True when the text after
a corrected turn was written again). Receivers run in the worker that finished the dialogue:
they should enqueue work (a task by name), not do it.
"""

from __future__ import annotations

from django.dispatch import Signal

dialogue_completed = Signal()
