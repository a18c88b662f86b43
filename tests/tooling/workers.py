"""Start and stop real `celery worker` processes for tests and benchmarks.

Each worker consumes a queue private to the test session and gets the *test* database in its
DATABASE_URL. Workers are always terminated (process group SIGKILL as a last resort), and their
output is kept in a log file that failing tests print.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """postgres:// URL of the database this process uses now (the test database in tests)."""
    params = connection.settings_dict
    auth = quote(params.get("USER") or "")
    if params.get("PASSWORD"):
        auth += ":" + quote(params["PASSWORD"])
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{params['NAME']}"


def unique_queue(prefix: str = "test") -> str:
    return f"synthreview-{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class CeleryWorker:
    def __init__(
        self,
        *,
        queue: str,
        pool: str = "threads",
        concurrency: int = 8,
        env: dict[str, str] | None = None,
        name: str | None = None,
        extra_args: list[str] | None = None,
        app: str = "synthreview",
    ) -> None:
        self.queue, self.pool, self.concurrency = queue, pool, concurrency
        self.name = name or f"w{uuid.uuid4().hex[:6]}"
        self.extra_env = env or {}
        self.extra_args = list(extra_args or [])
        self.app = app
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"celery-{self.name}-", suffix=".log")[1])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, wait: float = 60.0) -> CeleryWorker:
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "SECRET_KEY": os.environ.get("SECRET_KEY") or "worker-test-key",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        command = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            "--pool", self.pool, "--concurrency", str(self.concurrency),
            "-Q", self.queue, "--hostname", f"{self.name}@%h",
            "--without-gossip", "--without-mingle", "--loglevel", "INFO", *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.output()}")
            if " ready." in self.output():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"celery worker not ready after {wait}s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def children(self) -> list[int]:
        """Pool child pids (prefork), from /proc."""
        pids = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except (FileNotFoundError, ValueError):
                continue
        return pids

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and children), like a machine dying."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.process or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
