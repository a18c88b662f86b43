from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils import timezone

from generation.models import Dialogue
from review import services
from review.models import DialogueReview, Flag, ReviewEvent
from tests.factories import UserFactory, dialogue_with_turns
from tests.review.helpers import HX, turn_of, url

pytestmark = pytest.mark.django_db
# --- Pages: full page and htmx partial ----------------------------------------------------------


def test_login_page_needs_no_login_and_everything_else_does(client, dialogue):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Log in to synthreview" in response.content
    for path in (reverse("review:queue"), url("dialogue", dialogue)):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.get(reverse("review:healthz")).status_code == 200


def test_queue_full_page_and_partial(rclient, dialogue):
    response = rclient.get(reverse("review:queue"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" in body and dialogue.topic in body and "Review next" in body
    response = rclient.get(
        reverse("review:queue"), {"status": "all"}, HTTP_HX_TARGET="queue-results", **HX
    )
    body = response.content.decode()
    assert "<html" not in body and body.lstrip().startswith('<section id="queue-results"')


def test_queue_filters_and_counts(rclient, reviewer):
    plain = dialogue_with_turns(2)
    warned = dialogue_with_turns(2, run=plain.run)
    turn = turn_of(warned, 0)
    turn.warnings = ["repetition"]
    turn.save()
    approved = dialogue_with_turns(2, run=plain.run)
    DialogueReview.objects.create(dialogue=approved, status="approved", decided_by=reviewer)
    dialogue_with_turns(2, status=Dialogue.Status.GENERATING)

    response = rclient.get(reverse("review:queue"))
    assert response.context["counts"] == {
        "awaiting": 2, "in_review": 0, "adjudication": 0, "approved": 1, "rejected": 0, "all": 3,
    }  # fmt: skip
    assert [d.pk for d in response.context["rows"]] == [plain.pk, warned.pk]
    response = rclient.get(reverse("review:queue"), {"warnings": "yes"})
    assert [d.pk for d in response.context["rows"]] == [warned.pk]
    response = rclient.get(reverse("review:queue"), {"warnings": "no", "status": "approved"})
    assert [d.pk for d in response.context["rows"]] == [approved.pk]
    response = rclient.get(reverse("review:queue"), {"run": plain.run_id + 999})  # stale link
    assert response.status_code == 200


def test_dialogue_page_shows_transcript_roles_prompts_warnings_and_demo_label(rclient, dialogue):
    turn = turn_of(dialogue, 0)
    turn.warnings = ["truncated", "role_flip"]
    turn.save()
    body = rclient.get(url("dialogue", dialogue)).content.decode()
    assert "Teacher" in body and "Student" in body
    assert "You are a patient maths teacher." in body  # system prompts (collapsible)
    assert 'class="role role-assistant"' in body and 'class="role role-user"' in body
    assert "Truncated (hit max tokens)" in body and "Role flip" in body
    assert "Demo provider output" in body
    for label in ("Flag", "Edit", "Regenerate from here", "Approve", "Reject", "Review next"):
        assert label in body


def test_turn_with_script_is_shown_as_text(rclient, dialogue):
    turn = turn_of(dialogue)
    turn.text = '<script>alert("x")</script> <a href="javascript:alert(1)" hx-get="/review/next/">l</a> <img src=x onerror=alert(1)>'
    turn.save()
    body = rclient.get(url("dialogue", dialogue)).content.decode()
    assert "&lt;script&gt;alert(" in body
    assert '<script>alert("x")' not in body
    # Present only as escaped text, never as live markup.
    assert '<a href="javascript' not in body and "<img src=x" not in body
    assert 'hx-get="/review/next/">l' not in body
    assert '&lt;a href="javascript:alert(1)" hx-get="/review/next/"&gt;l&lt;/a&gt;' in body


def test_turn_partial_edit_and_flag_forms_full_page_and_partial(rclient, dialogue):
    turn = turn_of(dialogue)
    for name, marker in (
        ("turn", 'class="prose"'),
        ("turn_edit", "<textarea"),
        ("turn_flag", 'name="category"'),
    ):
        full = rclient.get(url(name, dialogue, turn)).content.decode()
        assert "<html" in full and marker in full
        partial = rclient.get(url(name, dialogue, turn), **HX).content.decode()
        assert "<html" not in partial and partial.lstrip().startswith(
            f'<article id="turn-{turn.pk}"'
        )
        assert marker in partial


def test_save_correction_htmx_returns_turn_with_diff_and_panel_out_of_band(rclient, dialogue):
    turn = turn_of(dialogue)
    response = rclient.post(
        url("turn_edit", dialogue, turn), {"text": "Turn text fixed.", "version": 1}, **HX
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith(f'<article id="turn-{turn.pk}"')
    assert (
        "Changes from the model&#x27;s original" in body
        or "Changes from the model's original" in body
    )
    assert "<ins>" in body and "<del>" in body and "Revert" in body
    assert 'id="panel"' in body and 'hx-swap-oob="true"' in body
    turn.refresh_from_db()
    assert turn.text == "Turn text fixed." and turn.version == 2


def test_save_correction_plain_post_redirects_back_to_the_turn(rclient, dialogue):
    turn = turn_of(dialogue)
    response = rclient.post(url("turn_edit", dialogue, turn), {"text": "Changed", "version": 1})
    assert response.status_code == 302
    assert response["Location"].endswith(f"{url('dialogue', dialogue)}#turn-{turn.pk}")


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "plain"])
def test_saving_an_unchanged_correction_says_nothing_changed(rclient, dialogue, headers):
    turn = turn_of(dialogue)
    turn.text = turn.original_text = "Line one.\nLine two."
    turn.save()
    # What a browser posts back for an untouched box: the same text with CRLF line endings.
    response = rclient.post(
        url("turn_edit", dialogue, turn), {"text": "Line one.\r\nLine two.", "version": 1},
        **headers,
    )  # fmt: skip
    assert response.status_code == 200
    body = response.content.decode()
    assert "Nothing changed: the text is the same as the saved version." in body
    assert f'id="edit-{turn.pk}"' in body  # the editor stays open
    turn.refresh_from_db()
    assert turn.version == 1 and not turn.revisions.exists()
    review = DialogueReview.objects.get(pk=dialogue.pk)
    assert review.claim_is_active()  # saving still renews the claim


def test_conflicting_save_shows_their_version_and_keeps_mine(rclient, dialogue):
    turn = turn_of(dialogue)
    rclient.post(url("turn_edit", dialogue, turn), {"text": "Theirs", "version": 1}, **HX)
    response = rclient.post(
        url("turn_edit", dialogue, turn), {"text": "Mine <b>", "version": 1}, **HX
    )
    assert response.status_code == 409
    body = response.content.decode()
    assert "changed by" in body and "Their version" in body and "Theirs" in body
    assert "Mine &lt;b&gt;</textarea>" in body
    assert 'name="version" value="2"' in body  # saving again knowingly replaces theirs
    response = rclient.post(url("turn_edit", dialogue, turn), {"text": "Mine", "version": 2}, **HX)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "cannot be empty"), ("x" * 20_001, "the limit is 20,000")],
)
def test_bad_correction_keeps_the_form_with_a_message(rclient, dialogue, text, message):
    turn = turn_of(dialogue)
    response = rclient.post(url("turn_edit", dialogue, turn), {"text": text, "version": 1}, **HX)
    assert response.status_code == 422
    body = response.content.decode()
    assert message in body and "<textarea" in body
    full = rclient.post(url("turn_edit", dialogue, turn), {"text": text, "version": 1})
    assert full.status_code == 422 and message in full.content.decode()
    assert "<html" in full.content.decode()


def test_html_correction_is_shown_escaped(rclient, dialogue):
    turn = turn_of(dialogue)
    rclient.post(
        url("turn_edit", dialogue, turn), {"text": "<script>alert(1)</script>", "version": 1}
    )
    body = rclient.get(url("dialogue", dialogue)).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_tampered_version_is_a_clear_error_not_a_crash(rclient, dialogue):
    turn = turn_of(dialogue)
    response = rclient.post(url("turn_edit", dialogue, turn), {"text": "x", "version": "abc"}, **HX)
    assert response.status_code == 422


def test_flag_dismiss_revert_and_regenerate_views(
    rclient, dialogue, reviewer, django_capture_on_commit_callbacks
):
    turn = turn_of(dialogue)
    response = rclient.post(
        url("turn_flag", dialogue, turn), {"category": "factual", "note": "wrong"}, **HX
    )
    assert response.status_code == 200 and "Factual error" in response.content.decode()
    assert "1 open flag" in response.content.decode()  # the panel out-of-band
    flag = Flag.objects.get()
    dismiss = reverse("review:flag_dismiss", args=[dialogue.pk, turn.pk, flag.pk])
    response = rclient.post(dismiss, {"reason": ""}, **HX)
    assert response.status_code == 422 and "Say why" in response.content.decode()
    response = rclient.post(dismiss, {"reason": "Fine as is"}, **HX)
    assert response.status_code == 200 and "Fine as is" in response.content.decode()

    rclient.post(url("turn_edit", dialogue, turn), {"text": "Fixed", "version": 1}, **HX)
    response = rclient.post(url("turn_revert", dialogue, turn), {"version": 2}, **HX)
    assert response.status_code == 200
    turn.refresh_from_db()
    assert turn.text == turn.original_text

    with django_capture_on_commit_callbacks(execute=True):
        response = rclient.post(
            url("turn_regenerate", dialogue, turn), {"version": turn.version}, **HX
        )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="transcript"')
    assert "discarded by regeneration" in body
    assert ReviewEvent.objects.filter(kind="regenerate").count() == 1


def test_flag_without_category_is_refused(rclient, dialogue):
    response = rclient.post(url("turn_flag", dialogue, turn_of(dialogue)), {"note": "x"}, **HX)
    assert response.status_code == 422 and 'name="category"' in response.content.decode()


def test_progress_partial_polls_while_generating_and_stops_when_done(rclient):
    dialogue = dialogue_with_turns(2, status=Dialogue.Status.GENERATING)
    body = rclient.get(url("progress", dialogue), **HX).content.decode()
    assert body.lstrip().startswith('<div id="generation"') and 'hx-trigger="every 1s"' in body
    assert 'id="transcript"' in body and 'hx-swap-oob="true"' in body
    Dialogue.objects.filter(pk=dialogue.pk).update(status=Dialogue.Status.COMPLETE)
    body = rclient.get(url("progress", dialogue), **HX).content.decode()
    assert "every 1s" not in body
    assert "<html" in rclient.get(url("progress", dialogue)).content.decode()


def test_approve_reject_reopen_views(rclient, dialogue):
    response = rclient.post(url("approve", dialogue), {"version": 1}, **HX)
    assert response.status_code == 200
    body = response.content.decode()
    assert (
        body.lstrip().startswith('<section id="panel"') and "Approved" in body and "Reopen" in body
    )
    assert 'data-action="edit"' not in body  # transcript is read-only now (out-of-band)
    response = rclient.post(url("reopen", dialogue), {"version": 1, "reason": "x"}, **HX)
    assert (
        response.status_code == 409 and "changed since you loaded it" in response.content.decode()
    )
    response = rclient.post(url("reopen", dialogue), {"version": 2, "reason": "Recheck turn 3"})
    assert response.status_code == 302
    assert (
        rclient.get(url("reject", dialogue), **HX)
        .content.decode()
        .count("Why is this dialogue rejected")
        == 1
    )
    response = rclient.post(
        url("reject", dialogue), {"version": 3, "reason": "", "mode": "reject"}, **HX
    )
    assert response.status_code == 422 and "Say why" in response.content.decode()
    response = rclient.post(url("reject", dialogue), {"version": 3, "reason": "Loops"}, **HX)
    assert response.status_code == 200
    assert DialogueReview.objects.get(pk=dialogue.pk).status == "rejected"


def test_approve_with_open_flag_is_refused_with_a_message(rclient, dialogue):
    turn = turn_of(dialogue)
    rclient.post(url("turn_flag", dialogue, turn), {"category": "tone"}, **HX)
    version = DialogueReview.objects.get(pk=dialogue.pk).version
    response = rclient.post(url("approve", dialogue), {"version": version}, **HX)
    assert response.status_code == 409 and "flag(s) still open" in response.content.decode()


def test_dialogue_held_by_someone_else_shows_holder_and_refuses_actions(rclient, dialogue):
    holder = UserFactory(reviewer=True, username="dr_jones")
    services.review_claim_next(actor=holder)
    body = rclient.get(url("dialogue", dialogue)).content.decode()
    assert "dr_jones" in body and "is reviewing this dialogue" in body
    assert 'data-action="edit"' not in body
    turn = turn_of(dialogue)
    response = rclient.post(url("turn_edit", dialogue, turn), {"text": "x", "version": 1}, **HX)
    assert response.status_code == 409 and "dr_jones is reviewing" in response.content.decode()
    response = rclient.post(url("approve", dialogue), {"version": 1}, **HX)
    assert response.status_code == 409 and "dr_jones" in response.content.decode()


def test_staff_can_release_a_claim_from_the_page(client, dialogue, admin_user):
    holder = UserFactory(reviewer=True)
    services.review_claim_next(actor=holder)
    client.force_login(admin_user)
    assert "Release claim" in client.get(url("dialogue", dialogue)).content.decode()
    response = client.post(url("release", dialogue), **HX)
    assert response.status_code == 200
    assert DialogueReview.objects.get(pk=dialogue.pk).claimed_by is None


def test_review_next_redirects_or_swaps_main(rclient, dialogue):
    response = rclient.post(reverse("review:next"))
    assert response.status_code == 302 and response["Location"] == url("dialogue", dialogue)
    response = rclient.post(reverse("review:next"), **HX)
    location = json.loads(response["HX-Location"])
    assert location["path"] == url("dialogue", dialogue) and location["target"] == "#main"


def test_review_next_with_nothing_left_goes_back_to_the_queue(rclient):
    response = rclient.post(reverse("review:next"), follow=True)
    assert b"Nothing is waiting for review" in response.content


def test_pages_send_a_strict_content_security_policy(rclient, dialogue):
    response = rclient.get(url("dialogue", dialogue))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    body = response.content.decode()
    assert "<script>" not in body and " style=" not in body and " on" + "click=" not in body


def test_acting_on_a_turn_discarded_by_regeneration_shows_the_current_transcript(rclient, dialogue):
    turn = turn_of(dialogue, 3)
    dialogue.turns.filter(pk=turn.pk).update(discarded_at=timezone.now())
    response = rclient.post(url("turn_edit", dialogue, turn), {"text": "x", "version": 1}, **HX)
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#transcript" and response["HX-Reswap"] == "outerHTML"
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="transcript"') and "discarded" in body
    response = rclient.get(url("turn_edit", dialogue, turn), **HX)
    assert response.status_code == 409 and "replaced by a regeneration" in response.content.decode()
    turn.refresh_from_db()
    assert turn.text == turn.original_text
