"""The per-run request gate on a real Redis: the cap holds across threads and processes, a dead
holder's slot comes back, a release wakes a waiter at once, a cancelled dialogue stops waiting."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from generation.engine import gate

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_id():
    """A run id no real run uses; its keys are deleted afterwards."""
    run_id = random.randrange(10**9, 2 * 10**9)
    yield run_id
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = list(client.scan_iter(f"{gate.KEY_PREFIX}:{run_id}:*"))
    if keys:
        client.delete(*keys)


def new_gate(run_id: int, limit: int, **kwargs) -> gate.RequestGate:
    """A gate instance of its own, as another worker process would have."""
    kwargs = {"hold_seconds": 30.0, "poll_seconds": 0.2, **kwargs}
    return gate.RequestGate(run_id=run_id, limit=limit, url=settings.CELERY_BROKER_URL, **kwargs)


class Tally:
    """The most holders seen at once, counted in Redis so that processes can share it."""

    def __init__(self, key: str) -> None:
        self.redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.key = key
        self.peak = 0

    def hold(self, seconds: float) -> None:
        now = self.redis.incr(self.key)
        self.peak = max(self.peak, now)
        time.sleep(seconds)
        self.redis.decr(self.key)


def hammer(slots: gate.RequestGate, tally: Tally, *, threads: int, rounds: int) -> None:
    def work() -> None:
        for _ in range(rounds):
            holder = slots.acquire()
            assert holder
            try:
                tally.hold(random.uniform(0.001, 0.01))
            finally:
                slots.release(holder)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert not any(thread.is_alive() for thread in pool)


def test_never_more_holders_than_the_limit_across_threads(run_id):
    tally = Tally(f"{gate.KEY_PREFIX}:{run_id}:tally")
    # Two instances, as two worker processes would have.
    first, second = new_gate(run_id, 5), new_gate(run_id, 5)
    both = [
        threading.Thread(target=hammer, args=(g, tally), kwargs={"threads": 16, "rounds": 15})
        for g in (first, second)
    ]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(120)
    assert tally.peak == 5  # reached, never exceeded
    assert first.holders() == []


_OTHER_PROCESS = """
import os, sys, django
django.setup()
from tests.generation.test_gate import Tally, hammer, new_gate
run_id = int(sys.argv[1])
tally = Tally(f"synthreview:gate:{run_id}:tally")
hammer(new_gate(run_id, 4), tally, threads=12, rounds=15)
print(tally.peak)
"""


def test_never_more_holders_than_the_limit_across_processes(run_id):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "synthreview.settings",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "gate-test",
    }
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(run_id)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tally = Tally(f"{gate.KEY_PREFIX}:{run_id}:tally")
    hammer(new_gate(run_id, 4), tally, threads=12, rounds=15)
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert max(tally.peak, int(out.split()[-1])) <= 4


def test_a_dead_holders_slot_is_reclaimed_once_it_expires(run_id):
    dead = new_gate(run_id, 1, hold_seconds=0.5)
    assert dead.acquire()  # and never released: its worker was killed mid-call
    alive = new_gate(run_id, 1, hold_seconds=0.5, poll_seconds=0.1)
    started = time.monotonic()
    holder = alive.acquire()
    waited = time.monotonic() - started
    assert holder
    assert 0.3 < waited < 2.0
    assert alive.holders() == [holder]
    alive.release(holder)


@pytest.mark.parametrize("same_process", [True, False], ids=["same-process", "other-process"])
def test_a_release_wakes_a_waiter_at_once(run_id, same_process):
    # A poll far longer than the test: only the release can explain a prompt wake-up.
    holding = new_gate(run_id, 1, poll_seconds=5.0)
    waiting = holding if same_process else new_gate(run_id, 1, poll_seconds=5.0)
    holder = holding.acquire()
    got: list[tuple[str | None, float]] = []
    waiter = threading.Thread(target=lambda: got.append((waiting.acquire(), time.monotonic())))
    waiter.start()
    time.sleep(0.3)
    assert not got
    released_at = time.monotonic()
    holding.release(holder)
    waiter.join(5)
    assert got and got[0][0]
    assert got[0][1] - released_at < 1.0  # well before the 5 s poll, even on a loaded machine
    waiting.release(got[0][0])
    assert holding.holders() == []


def test_a_cancelled_dialogue_stops_waiting_and_leaves_the_queue(run_id):
    slots = new_gate(run_id, 1)
    holder = slots.acquire()
    asked = []

    def keep_waiting() -> bool:
        asked.append(time.monotonic())
        return False  # cancelled meanwhile

    started = time.monotonic()
    assert slots.acquire(keep_waiting=keep_waiting) is None
    assert asked and time.monotonic() - started < 1.0
    slots.release(holder)
    # The slot went to nobody else: the departed waiter left the queue.
    assert slots.holders() == []
    assert new_gate(run_id, 1).acquire()


def test_waiters_are_served_first_come_first_served(run_id):
    slots = new_gate(run_id, 1, poll_seconds=5.0)
    holder = slots.acquire()
    served: list[int] = []

    def wait(number: int) -> None:
        got = slots.acquire()
        served.append(number)
        slots.release(got)

    waiters = []
    for number in range(4):
        waiter = threading.Thread(target=wait, args=(number,))
        waiter.start()
        waiters.append(waiter)
        time.sleep(0.1)  # queued in this order
    slots.release(holder)
    for waiter in waiters:
        waiter.join(5)
    assert served == [0, 1, 2, 3]
    assert slots.holders() == []
