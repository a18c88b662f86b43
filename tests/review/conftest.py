from __future__ import annotations

import pytest

from tests.factories import dialogue_with_turns
from tests.tooling.browser import browser, new_tab  # noqa: F401  (fixtures)


@pytest.fixture
def dialogue():
    """A complete 4-turn dialogue awaiting review."""
    return dialogue_with_turns(4)


@pytest.fixture
def rclient(client, reviewer):
    """A test client logged in as a reviewer."""
    client.force_login(reviewer)
    return client
