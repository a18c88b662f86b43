"""The Celery app as it ran before endpoint pacing, for bench/endpoint_bench.py's baseline:
each run's request cap (`max_in_flight`) and retries with backoff only.

    celery -A bench.unpaced_celery worker ...
"""

from __future__ import annotations

from generation.engine import pacing
from synthreview.celery import app

# endpoint_complete calls without a pacer when there is none: the request gate and retries
# remain, as they were.
pacing.endpoint_pacer = lambda **kwargs: None

__all__ = ["app"]
