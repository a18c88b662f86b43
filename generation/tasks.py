"""Celery tasks: ids in, one service call each. Safe to run twice (see services)."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import services, worker


@shared_task(
    name="generation.generate_dialogue",
    acks_late=True,
    ignore_result=True,
    # Database and Redis (request gate) blips, a dropped connection, a deadlock victim, are
    # transient: try again later, continuing from the last saved turn. LLM errors are retried
    # inside the service.
    autoretry_for=(OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def generate_dialogue(dialogue_id: int) -> None:
    run_id = services.dialogue_generate(dialogue_id=dialogue_id)
    if run_id is not None:
        # The finished dialogue handed its window slot to the next one (services); with no
        # broker, run_dispatch's outer loop does that instead. Close the run if all are done.
        if services.tasks_run_inline():
            services.run_dispatch(run_id=run_id)
        elif services.dialogue_handed_over():
            return  # the successor it dispatched is still open: the run cannot be done yet
        services.run_finalize(run_id=run_id)


@shared_task(name="generation.sweep", acks_late=True, ignore_result=True)
def sweep() -> int:
    """Also runnable from Celery beat; workers already run it on a timer (generation.worker)."""
    return services.dialogues_sweep()


@worker_ready.connect
def _start_maintenance_in_worker(sender=None, **kwargs) -> None:
    worker.consumer_wake_often(sender)
    worker.gevent_tune()
    # Prefork: the parent never touches the database (its connections would be inherited by
    # children forked later); each child starts its own thread in worker_process_init.
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.endswith("prefork"):
        return
    worker.maintenance_start()


@worker_process_init.connect
def _start_maintenance_in_child(**kwargs) -> None:
    worker.maintenance_start()
