"""Admin for review state (reviews.py), dataset exports (exports.py), and review's additions to
the run and dialogue admins (generation.py)."""

from __future__ import annotations

from . import exports, generation, judge, reviews  # noqa: F401  (registers the ModelAdmins)
