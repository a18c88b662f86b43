"""Admin for review state (reviews.py) and dataset exports (exports.py)."""

from __future__ import annotations

from . import exports, reviews  # noqa: F401  (registers the ModelAdmins)
