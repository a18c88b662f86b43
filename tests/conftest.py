"""Shared fixtures, and the rule for tests that need real services.

Tests marked `postgres`, `redis`, `worker` or `browser` skip with a visible reason when the
service is missing, and fail instead when SYNTHREVIEW_REQUIRE_SERVICES=1 (CI sets it), so a CI
run can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import time
from functools import cache

import pytest
from django.conf import settings

from tests.factories import UserFactory
from tests.tooling.browser import browser, new_tab  # noqa: F401  (fixtures for browser tests)

REQUIRE_SERVICES = os.environ.get("SYNTHREVIEW_REQUIRE_SERVICES", "") in {"1", "true", "yes"}
CHROMIUM = os.environ.get("SYNTHREVIEW_CHROMIUM", "/usr/bin/chromium")


@cache
def _postgres_missing() -> str | None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "PostgreSQL not configured (set DATABASE_URL=postgres://...)"
    return None


@cache
def _redis_missing() -> str | None:
    url = settings.CELERY_BROKER_URL
    if not url:
        return "Redis broker not configured (set CELERY_BROKER_URL=redis://...)"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means "not usable here"
        return f"Redis at {url} not reachable: {exc}"
    return None


@cache
def _browser_missing() -> str | None:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright not installed"
    return None


_CHECKS = {
    "postgres": (_postgres_missing,),
    "redis": (_redis_missing,),
    "worker": (_postgres_missing, _redis_missing),
    "browser": (_browser_missing,),
}


def pytest_configure(config: pytest.Config) -> None:
    # Production serves hashed files from collectstatic's manifest; tests read static/ directly.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # Factories hash a password per user; the slow production hasher would dominate test time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, checks in _CHECKS.items():
        if item.get_closest_marker(marker) is None:
            continue
        for check in checks:
            reason = check()
            if reason is None:
                continue
            if REQUIRE_SERVICES:
                pytest.fail(f"[{marker}] required by SYNTHREVIEW_REQUIRE_SERVICES=1: {reason}")
            pytest.skip(f"[{marker}] {reason}")


@pytest.fixture(autouse=True)
def _tasks_inline(request: pytest.FixtureRequest):
    """Tasks run in-process even when CELERY_BROKER_URL points at a real Redis, so no test leaves
    messages behind for nobody; tests marked `worker` talk to real worker processes instead."""
    from synthreview.celery import app

    if request.node.get_closest_marker("worker"):
        yield
        return
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _worker_checks_drained(request: pytest.FixtureRequest):
    """After a test with real workers, wait (10 s at most) until the near-duplicate checks its
    completed dialogues queued have run: a check still in its transaction when the test's
    database is flushed deadlocks with the flush's TRUNCATE."""
    if request.node.get_closest_marker("worker") is None:
        yield
        return
    request.getfixturevalue("transactional_db")  # so this ends before the flush
    yield
    from review.duplicates import queue
    from review.models import PendingDuplicateCheck

    flag = queue._redis()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not flag.exists(queue.FLAG_KEY) and not PendingDuplicateCheck.objects.exists():
            break
        time.sleep(0.1)
    time.sleep(0.2)  # the task's last commit to its return


@pytest.fixture(autouse=True)
def _lost_checks_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The near-duplicate check's sweep for lost checks runs in the first check of a process
    and then every ten minutes: whichever test came first would pay for it. Tests find it
    just done; the sweep's own tests make it due."""
    from review.duplicates import queue

    monkeypatch.setattr(queue, "_swept_at", time.monotonic())


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def reviewer(db):
    return UserFactory(reviewer=True)


@pytest.fixture
def admin_user(db):
    return UserFactory(reviewer=True, is_staff=True, is_superuser=True)
