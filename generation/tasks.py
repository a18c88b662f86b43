"""Celery tasks: ids in, one engine call each, safe to run twice (see generation.engine.loop).

Also the worker signals that start each worker process's maintenance thread.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_init, worker_process_init, worker_ready
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .engine import worker
from .engine.dispatch import TASK_NAME
from .engine.loop import dialogue_generate
from .engine.sweep import dialogues_sweep


@shared_task(
    name=TASK_NAME,
    acks_late=True,
    ignore_result=True,
    # Database and Redis (request gate) blips, a dropped connection, a deadlock victim, are
    # transient: try again later, continuing from the last saved turn. LLM errors are retried
    # inside the engine.
    autoretry_for=(OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def generate_dialogue(dialogue_id: int) -> None:
    dialogue_generate(dialogue_id=dialogue_id)


@shared_task(name="generation.sweep", acks_late=True, ignore_result=True)
def sweep() -> int:
    """Also runnable from Celery beat; workers already run it on a timer (engine.worker)."""
    return dialogues_sweep()


@worker_init.connect
def _import_llm_sdk(**kwargs) -> None:
    """Import the OpenAI SDK before the first task: it takes most of a second, which the
    first dialogues of a run would otherwise wait out together (the import holds the import
    lock). Prefork children inherit it."""
    from generation.llm import openai_client  # noqa: F401


@worker_ready.connect
def _start_maintenance_in_worker(sender=None, **kwargs) -> None:
    worker.maintenance_start_for(getattr(sender, "pool", None))


@worker_process_init.connect
def _start_maintenance_in_child(**kwargs) -> None:
    worker.maintenance_start()
