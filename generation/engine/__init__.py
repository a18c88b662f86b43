"""The generation engine: how a run's dialogues get written, turn by turn, by Celery workers.

- `leases`: who may generate a dialogue (a conditional UPDATE), renewed by the worker.
- `dispatch`: the run's window of open dialogues, and sending the dialogue task by name.
- `loop`: one dialogue's turns (the task's whole body).
- `statements`: the two statements every turn costs, as portable SQL.
- `finish`: ending a dialogue, handing its window slot on, closing the run.
- `usage`: token and cost accounting, rolled up into the run exactly once.
- `sweep`: recovery of dialogues whose worker died.
- `gate`: the per-run cap on concurrent LLM requests, in Redis (its Lua scripts beside it).
- `worker`: the maintenance thread every worker process runs (lease heartbeat, sweep).

Nothing here imports `generation.tasks` or `generation.services`: tasks are sent by name.
"""
