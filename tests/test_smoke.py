from __future__ import annotations

from tests.factories import dialogue_with_turns


def test_dialogue_page_renders(client, reviewer):
    dialogue = dialogue_with_turns(4)
    client.force_login(reviewer)
    response = client.get(dialogue.get_absolute_url())
    assert response.status_code == 200
