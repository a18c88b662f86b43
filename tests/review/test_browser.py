"""The review screens in Debian chromium, used the way an expert uses them."""

from __future__ import annotations

import re

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser marker reports it (skip, or fail in CI)
    expect = None

from review.models import DialogueReview, Flag
from tests.factories import UserFactory, dialogue_with_turns
from tests.review.helpers import url
from tests.tooling.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TRIG = "We know that $\\sin^2 x + \\cos^2 x = 2$ for every angle $x$."


def _maths_dialogue():
    dialogue = dialogue_with_turns(4)
    turn = dialogue.turns.get(position=1)
    turn.original_text = turn.text = TRIG
    turn.save()
    return dialogue, turn


def _assert_clean_load(tab, response) -> None:
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert tab.csp_violations() == []
    assert [e for e in tab.console_errors if "Content Security Policy" in e] == []


def test_expert_reviews_a_dialogue_end_to_end(live_server, new_tab):
    expert = UserFactory(reviewer=True, username="ms_rivera")
    dialogue, turn = _maths_dialogue()
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "ms_rivera")

    # Review next: claims the dialogue and swaps it in without a reload.
    page.get_by_role("button", name=re.compile("^Review next")).click()
    page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    article = page.locator(f"#turn-{turn.pk}")
    article.locator(".katex").first.wait_for()  # the maths is typeset, not raw TeX
    assert "You hold this dialogue" in page.locator("#panel").inner_text()
    response = page.reload()
    _assert_clean_load(tab, response)

    # Flag the wrong identity.
    article.get_by_role("link", name="Flag").click()
    article.get_by_label("Factual error").check()
    article.get_by_label("Note").fill("The identity equals 1, not 2.")
    article.get_by_role("button", name="Flag", exact=True).click()
    article.locator(".flag-open").wait_for()
    assert page.locator("#approve-button").is_disabled()

    # Correct it; the diff shows what changed and the flag is resolved.
    article.get_by_role("link", name="Edit").click()
    expect(article.locator("textarea")).to_be_focused()  # the box is ready for typing
    article.locator("textarea").fill(TRIG.replace("= 2$", "= 1$"))
    article.get_by_role("button", name="Save").click()
    diff = article.locator(".diff")
    diff.wait_for()
    assert diff.locator("del").inner_text().strip().endswith("2$")
    assert diff.locator("ins").inner_text().strip().endswith("1$")
    assert article.locator(".flag-corrected").count() == 1
    assert page.locator("#approve-button").is_enabled()

    # Regenerate from the corrected turn: later turns go to the history, new ones appear.
    article.get_by_role("button", name="Regenerate from here").click()
    page.locator("#transcript details.history").wait_for()
    page.wait_for_function("document.querySelectorAll('#transcript > article.turn').length >= 3")
    assert "discarded by regeneration" in page.locator("#transcript").inner_text()
    page.locator("#generation.running").wait_for(state="detached")

    # Approve.
    page.locator("#approve-button").click()
    page.locator("#panel .badge.ok").wait_for()
    assert "Approved by ms_rivera" in page.locator("#panel").inner_text()
    assert page.locator('[data-action="edit"]').count() == 0  # read-only now
    review = DialogueReview.objects.get(pk=dialogue.pk)
    assert review.status == "approved" and review.decided_by == expert
    assert Flag.objects.get().resolution == "corrected"
    assert tab.csp_violations() == []


def test_keyboard_shortcuts(live_server, new_tab):
    UserFactory(reviewer=True, username="kb")
    dialogue, turn = _maths_dialogue()
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "kb")
    page.goto(f"{live_server.url}{url('dialogue', dialogue)}")
    page.keyboard.press("?")
    page.locator("dialog#shortcuts").wait_for()
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.locator("article.turn.is-current").get_attribute("id") == f"turn-{turn.pk}"
    page.keyboard.press("e")
    textarea = page.locator(f"#turn-{turn.pk} textarea")
    expect(textarea).to_be_focused()
    textarea.fill("Better: $\\sin^2 x + \\cos^2 x = 1$.")
    page.keyboard.press("Control+Enter")
    page.locator(f"#turn-{turn.pk} .diff").wait_for()
    page.keyboard.press("f")
    expect(page.locator(f"#turn-{turn.pk} .flag-form input[type=radio]").first).to_be_focused()
    page.keyboard.press("Escape")
    page.locator(f"#turn-{turn.pk} .flag-form").wait_for(state="detached")
    page.keyboard.press("r")
    assert page.locator("#reject-reason").is_visible()
    page.locator("#reject-reason").fill("Too short to be useful.")
    page.locator("#reject-reason").press("Control+Enter")
    page.locator("#panel .badge.bad").wait_for()
    assert DialogueReview.objects.get(pk=dialogue.pk).status == "rejected"


def test_second_context_editing_the_same_turn_gets_the_conflict(live_server, new_tab):
    UserFactory(reviewer=True, username="dr_a")
    dialogue, turn = _maths_dialogue()
    first, second = new_tab(), new_tab()
    for tab in (first, second):
        log_in(tab, live_server.url, "dr_a")
        tab.page.goto(f"{live_server.url}{url('dialogue', dialogue)}")
        tab.page.locator(f"#turn-{turn.pk}").get_by_role("link", name="Edit").click()
        expect(tab.page.locator(f"#turn-{turn.pk} textarea")).to_be_focused()

    first.page.locator(f"#turn-{turn.pk} textarea").fill("First expert's correction.")
    first.page.locator(f"#turn-{turn.pk}").get_by_role("button", name="Save").click()
    first.page.locator(f"#turn-{turn.pk} .diff").wait_for()

    article = second.page.locator(f"#turn-{turn.pk}")
    article.locator("textarea").fill("Second correction.")
    article.get_by_role("button", name="Save").click()
    article.locator(".alert.conflict").wait_for()
    assert "changed by dr_a" in article.locator(".alert.conflict").inner_text()
    assert "First expert's correction." in article.locator(".their-version").inner_text()
    assert article.locator("textarea").input_value() == "Second correction."  # nothing lost
    turn.refresh_from_db()
    assert turn.text == "First expert's correction."


def test_plain_user_sees_the_access_page(live_server, new_tab):
    UserFactory(username="visitor")
    tab = new_tab()
    page = tab.page
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("visitor")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("ask an admin for reviewer access").wait_for()


def test_escape_closes_the_reject_panel(live_server, new_tab):
    UserFactory(reviewer=True, username="esc")
    dialogue, _ = _maths_dialogue()
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "esc")
    page.goto(f"{live_server.url}{url('dialogue', dialogue)}")
    reason = page.locator("#reject-reason")
    page.keyboard.press("r")
    expect(reason).to_be_focused()
    reason.fill("Half a thought")
    page.keyboard.press("Escape")
    expect(reason).to_be_hidden()
    expect(page.locator("#reject > summary")).to_be_focused()  # the keyboard stays in place
    # Opened with the mouse, it closes with Escape too, wherever the focus is.
    page.locator("#reject > summary").click()
    expect(reason).to_be_visible()
    page.locator("h1").click()
    page.keyboard.press("Escape")
    expect(reason).to_be_hidden()
    assert DialogueReview.objects.filter(pk=dialogue.pk, status="rejected").count() == 0


def test_back_after_approve_shows_the_page_as_it_is_now(live_server, new_tab):
    """Neither the browser's cache nor htmx's history snapshot may bring back a page as it
    was before the reviewer acted on it."""
    UserFactory(reviewer=True, username="back")
    dialogue, _ = _maths_dialogue()
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "back")
    awaiting = page.locator(".tab", has_text="Awaiting review").locator(".count")
    expect(awaiting).to_have_text("1")

    # From the queue, Review next (htmx, pushes the dialogue's address), then Approve.
    page.get_by_role("button", name=re.compile("^Review next")).click()
    page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    page.locator("#approve-button").click()
    page.locator("#panel .badge.ok").wait_for()
    page.go_back()
    page.wait_for_url(f"{live_server.url}/review/")
    expect(awaiting).to_have_text("0")

    # A full page load of the dialogue, approve... reopen it, leave, come back.
    page.goto(f"{live_server.url}{url('dialogue', dialogue)}")
    page.locator("#reopen > summary").click()
    page.locator("#reopen-reason").fill("Second look")
    page.get_by_role("button", name="Reopen", exact=True).click()
    page.locator("#approve-button").wait_for()
    page.get_by_role("link", name="Review queue").first.click()
    page.wait_for_url(f"{live_server.url}/review/")
    page.go_back()
    page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    expect(page.locator("#panel .panel-status")).to_contain_text("In review")
    assert page.locator("#approve-button").count() == 1


def test_scripts_cannot_read_the_csrf_cookie_and_htmx_still_posts(live_server, new_tab):
    UserFactory(reviewer=True, username="cookie")
    dialogue, _ = _maths_dialogue()
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "cookie")
    page.goto(f"{live_server.url}{url('dialogue', dialogue)}")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["csrftoken"]["httpOnly"] is True
    assert "csrftoken" not in page.evaluate("document.cookie")
    page.locator("#approve-button").click()  # htmx, token in a header
    page.locator("#panel .badge.ok").wait_for()
    assert DialogueReview.objects.get(pk=dialogue.pk).status == "approved"


def test_saving_an_unchanged_correction_says_so(live_server, new_tab):
    UserFactory(reviewer=True, username="same")
    dialogue, turn = _maths_dialogue()
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "same")
    page.goto(f"{live_server.url}{url('dialogue', dialogue)}")
    article = page.locator(f"#turn-{turn.pk}")
    article.get_by_role("link", name="Edit").click()
    expect(article.locator("textarea")).to_be_focused()
    article.get_by_role("button", name="Save").click()
    expect(article.get_by_role("status")).to_contain_text("Nothing changed")
    expect(article.locator("textarea")).to_be_visible()


def test_judge_suggestions_are_accepted_and_dismissed_with_one_key(live_server, new_tab):
    from review.models import Suggestion

    UserFactory(reviewer=True, username="judge_checker")
    dialogue, turn = _maths_dialogue()
    wrong = Suggestion.objects.create(
        turn=turn, category="factual", severity=3, rationale="The identity equals 1, not 2."
    )
    later = dialogue.turns.get(position=2)
    fine = Suggestion.objects.create(turn=later, category="tone", severity=1, rationale="Curt.")
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "judge_checker")
    page.goto(f"{live_server.url}{url('dialogue', dialogue)}")
    suggestion = page.locator(f"#turn-{turn.pk} .suggestion")
    assert suggestion.locator(".source").inner_text().lower() == "judge"
    assert page.locator(f"#turn-{turn.pk} .flag").count() == 0  # a suggestion is not a flag

    # j j: the second turn; y accepts its suggestion, which becomes an open flag.
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("y")
    page.locator(f"#turn-{turn.pk} .flag-open").wait_for()
    expect(suggestion).to_have_class(re.compile("suggestion-decided"))
    expect(suggestion).to_contain_text("accepted as a flag by you")
    assert page.locator("#approve-button").is_disabled()  # the new flag must be resolved

    # j: the third turn; x dismisses its suggestion, without a reason.
    page.keyboard.press("j")
    page.keyboard.press("x")
    expect(page.locator(f"#turn-{later.pk} .suggestion")).to_have_class(
        re.compile("suggestion-decided")
    )
    expect(page.locator(f"#turn-{later.pk} .suggestion")).to_contain_text("dismissed by you")
    assert (wrong.decisions.get().status, fine.decisions.get().status) == ("accepted", "dismissed")
    assert Flag.objects.get(turn=turn).category == "factual"
