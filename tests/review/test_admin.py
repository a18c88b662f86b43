from __future__ import annotations

import pytest
from django.urls import reverse

from review import services
from review.models import DialogueReview, ReviewEvent
from tests.factories import UserFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


def test_admin_release_claims_action(client, admin_user):
    first, second = dialogue_with_turns(2), dialogue_with_turns(2)
    services.review_claim_next(actor=UserFactory(reviewer=True))
    services.review_claim_next(actor=UserFactory(reviewer=True))
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:review_dialoguereview_changelist"),
        {"action": "release_claims", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Released 2 claim(s)." in response.content
    assert not DialogueReview.objects.filter(claimed_by__isnull=False).exists()
    assert ReviewEvent.objects.filter(kind="release", actor=admin_user).count() == 2


@pytest.mark.parametrize("model", ["dialoguereview", "flag", "turnrevision", "reviewevent"])
def test_admin_changelists_render(client, admin_user, model):
    dialogue = dialogue_with_turns(2)
    turn = dialogue.turns.first()
    services.turn_flag(dialogue_id=dialogue.pk, turn_id=turn.pk, actor=admin_user, category="tone")
    services.turn_correct(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=admin_user, text="x", expected_version=1
    )
    client.force_login(admin_user)
    assert client.get(reverse(f"admin:review_{model}_changelist")).status_code == 200
