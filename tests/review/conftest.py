from __future__ import annotations

from tests.tooling.browser import browser, eager_celery, new_tab  # noqa: F401  (fixtures)
