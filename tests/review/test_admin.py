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


def test_review_extends_the_run_and_dialogue_admins(admin_client):
    """generation registers its admins without knowing review; review replaces them with
    subclasses that add the export actions and open dialogues in the review screen."""
    from django.contrib import admin

    from generation import admin as generation_admin
    from generation.models import Dialogue, GenerationRun
    from review.admin.exports import export_dialogues_action, export_runs_action

    dialogue_admin = admin.site._registry[Dialogue]
    run_admin = admin.site._registry[GenerationRun]
    assert isinstance(dialogue_admin, generation_admin.DialogueAdmin)
    assert isinstance(run_admin, generation_admin.GenerationRunAdmin)
    assert export_dialogues_action in dialogue_admin.actions
    assert export_runs_action in run_admin.actions
    assert export_runs_action not in generation_admin.GenerationRunAdmin.actions

    dialogue = dialogue_with_turns(3, status=Dialogue.Status.FAILED)
    Dialogue.objects.filter(pk=dialogue.pk).update(
        failure_reason="HTTP 404 from the LLM server: no such model"
    )
    html = admin_client.get(
        reverse("admin:generation_dialogue_change", args=[dialogue.pk])
    ).content.decode()
    assert "HTTP 404 from the LLM server: no such model" in html
    assert html.count("Turn text") >= 3
    # "View on site" opens the dialogue in the review screen.
    assert "View on site" in html
    assert dialogue_admin.get_view_on_site_url(dialogue) == reverse(
        "review:dialogue", args=[dialogue.pk]
    )
    changelist = admin_client.get(reverse("admin:generation_dialogue_changelist")).content.decode()
    assert "HTTP 404 from the LLM server" in changelist


def test_dialogue_admin_shows_and_filters_the_review_status(admin_client):
    from generation.models import Dialogue

    approved = dialogue_with_turns(2, topic="approved one")
    DialogueReview.objects.create(dialogue=approved, status="approved")
    rejected = dialogue_with_turns(2, topic="rejected one")
    DialogueReview.objects.create(dialogue=rejected, status="rejected")
    unopened = dialogue_with_turns(2, topic="unopened one")
    failed = dialogue_with_turns(1, topic="failed one", status=Dialogue.Status.FAILED)
    changelist = reverse("admin:generation_dialogue_changelist")

    def listed(**query) -> set[int]:
        response = admin_client.get(changelist, query)
        assert response.status_code == 200
        return {d.pk for d in response.context["cl"].result_list}

    assert listed(review="approved") == {approved.pk}
    assert listed(review="rejected") == {rejected.pk}
    assert listed(review="pending") == {unopened.pk}
    assert listed() == {approved.pk, rejected.pk, unopened.pk, failed.pk}
    html = admin_client.get(changelist).content.decode()
    assert "By review status" in html
    assert html.count('<td class="field-review_status">Approved</td>') == 1
    assert html.count('<td class="field-review_status">Awaiting review</td>') == 1
    assert html.count('<td class="field-review_status">-</td>') == 1  # failed: not reviewable
    # The column sorts.
    response = admin_client.get(changelist, {"o": "7"})
    assert response.status_code == 200


def test_dialogue_reviews_offer_the_export_action(admin_client):
    approved = dialogue_with_turns(2)
    DialogueReview.objects.create(dialogue=approved, status="approved")
    pending = dialogue_with_turns(2)
    DialogueReview.objects.create(dialogue=pending, status="pending")
    response = admin_client.post(
        reverse("admin:review_dialoguereview_changelist"),
        {"action": "export_reviews_action", "_selected_action": [approved.pk, pending.pk],
         "index": "0"},
    )  # fmt: skip
    assert response.status_code == 200
    body = response.content.decode()
    assert "2 dialogue reviews selected" in body
    assert "1 approved dialogue will be exported" in body
