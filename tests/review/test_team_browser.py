"""The team workflow in Debian chromium: the queue (pages, search, filters, bulk assign),
approve-and-next by keyboard, blind independent reviews and adjudication."""

from __future__ import annotations

import re

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser marker reports it (skip, or fail in CI)
    expect = None

from review.models import (
    DialogueReview,
    IndependentReview,
    ReviewPolicy,
    Suggestion,
    SuggestionDecision,
)
from tests.factories import RunFactory, UserFactory, dialogue_with_turns
from tests.review.helpers import turn_of, url
from tests.tooling.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _rows(page) -> list[str]:
    return page.locator("table.queue tbody a.row-link").all_inner_texts()


def test_queue_pages_search_filter_and_bulk_assign(live_server, new_tab):
    UserFactory(reviewer=True, is_staff=True, username="lead")
    UserFactory(reviewer=True, username="dr_kim")
    run = RunFactory()
    dialogues = [dialogue_with_turns(1, run=run, topic=f"topic {i:03}") for i in range(60)]
    special = turn_of(dialogues[42], 0)
    special.text = special.original_text = "The hypotenuse is opposite the right angle."
    special.save()
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "lead")

    # Pages of 50: forward, back, and the rows never repeat.
    expect(page.locator("table.queue tbody tr")).to_have_count(50)
    first = _rows(page)
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("table.queue tbody tr")).to_have_count(10)
    assert "after=" in page.url  # pushed into the history: a page has an address
    assert not set(_rows(page)) & set(first)
    page.get_by_role("link", name="← Previous").click()
    expect(page.locator("table.queue tbody tr")).to_have_count(50)
    assert _rows(page) == first

    # Search the text of the turns.
    page.get_by_label("Search").fill("hypotenuse")
    page.get_by_label("Search").press("Enter")
    expect(page.locator("table.queue tbody tr")).to_have_count(1)
    expect(page.locator("table.queue tbody")).to_contain_text("topic 042")
    page.get_by_label("Search").fill("")
    page.get_by_label("Search").press("Enter")
    expect(page.locator("table.queue tbody tr")).to_have_count(50)

    # Bulk: tick two, assign them to dr_kim.
    page.get_by_label(f"Tick dialogue #{dialogues[0].pk}", exact=True).check()
    page.get_by_label(f"Tick dialogue #{dialogues[1].pk}", exact=True).check()
    page.locator("#bulk-action").select_option("assign")
    page.locator("#bulk-assignee").select_option(label="dr_kim")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".messages")).to_contain_text("Assigned 2 of 2 dialogue(s) to dr_kim.")
    assert DialogueReview.objects.filter(assigned_to__username="dr_kim").count() == 2

    # The counts per filter, loaded after the page: dr_kim has 2; a click filters by it, and
    # the filter form follows (the whole main area is swapped).
    facet = page.locator("#queue-facets section[aria-label='Assigned to'] li", has_text="dr_kim")
    expect(facet.locator(".count")).to_have_text("2")
    facet.get_by_role("link").click()
    expect(page.locator("table.queue tbody tr")).to_have_count(2)
    expect(page.get_by_label("Assigned to")).to_have_value(re.compile("^u:"))
    assert "assignee=u" in page.url
    chosen = page.locator("#queue-facets li.active", has_text="dr_kim")
    chosen.get_by_role("link").click()  # the chosen option removes itself
    expect(page.locator("table.queue tbody tr")).to_have_count(50)

    # Filter by assignee: the two assigned ones, with the count on the tab.
    page.get_by_label("Assigned to").select_option(label="dr_kim")
    expect(page.locator("table.queue tbody tr")).to_have_count(2)
    expect(page.locator(".tab.active .count")).to_have_text("2")
    assert tab.csp_violations() == []


def test_approve_and_next_by_keyboard(live_server, new_tab):
    UserFactory(reviewer=True, username="fast")
    run = RunFactory()
    first, second = (dialogue_with_turns(2, run=run) for _ in range(2))
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "fast")
    page.keyboard.press("n")
    page.wait_for_url(f"{live_server.url}{url('dialogue', first)}")
    page.locator("#approve-next-button").wait_for()
    page.keyboard.press("Shift+A")
    page.wait_for_url(f"{live_server.url}{url('dialogue', second)}")
    expect(page.locator("#panel")).to_contain_text("You hold this dialogue")
    assert DialogueReview.objects.get(pk=first.pk).status == "approved"
    page.keyboard.press("Shift+A")
    page.wait_for_url(f"{live_server.url}/review/")
    expect(page.locator(".messages")).to_contain_text("Nothing is waiting for review")
    assert DialogueReview.objects.get(pk=second.pk).status == "approved"


def test_blind_second_reviewer_then_adjudication(live_server, new_tab):
    UserFactory(reviewer=True, username="dr_a")
    UserFactory(reviewer=True, username="dr_b")
    UserFactory(reviewer=True, is_staff=True, username="chief")
    run = RunFactory()
    ReviewPolicy.objects.create(scenario=run.scenario, reviews_required=2)
    dialogue = dialogue_with_turns(3, run=run)
    turn = turn_of(dialogue, 1)

    # Expert A flags and corrects turn 2, then approves.
    a = new_tab()
    log_in(a, live_server.url, "dr_a")
    a.page.get_by_role("button", name=re.compile("^Review next")).click()
    a.page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    article = a.page.locator(f"#turn-{turn.pk}")
    article.get_by_role("link", name="Flag").click()
    article.get_by_label("Factual error").check()
    article.get_by_label("Note").fill("A thinks the sign is wrong")
    article.get_by_role("button", name="Flag", exact=True).click()
    article.locator(".flag-open").wait_for()
    article.get_by_role("link", name="Edit").click()
    article.locator("textarea").fill("Correction by A.")
    article.get_by_role("button", name="Save").click()
    article.locator(".diff").wait_for()
    a.page.locator("#approve-button").click()
    expect(a.page.locator("#panel")).to_contain_text("You submitted your review")
    turn.refresh_from_db()
    assert turn.text == turn.original_text  # nothing settled yet

    # Expert B gets the same dialogue and sees none of A's work.
    b = new_tab()
    log_in(b, live_server.url, "dr_b")
    b.page.get_by_role("button", name=re.compile("^Review next")).click()
    b.page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    body = b.page.locator("main").inner_text()
    assert "A thinks the sign is wrong" not in body and "Correction by A." not in body
    assert "1 of 2 submitted" in body
    article = b.page.locator(f"#turn-{turn.pk}")
    article.get_by_role("link", name="Edit").click()
    article.locator("textarea").fill("Correction by B.")
    article.get_by_role("button", name="Save").click()
    article.locator(".diff").wait_for()
    b.page.locator("#approve-button").click()
    expect(b.page.locator("#panel")).to_contain_text("Awaiting adjudication")

    # The chief adjudicates from the queue: side by side, picks B's text, approves.
    chief = new_tab()
    log_in(chief, live_server.url, "chief")
    chief.page.get_by_role("link", name=re.compile("Awaiting adjudication")).click()
    chief.page.get_by_role("link", name="Adjudicate").click()
    columns = chief.page.locator(f"#turn-{turn.pk} .proposal")
    expect(columns).to_have_count(2)
    expect(columns.nth(0)).to_contain_text("Correction by A.")
    expect(columns.nth(1)).to_contain_text("Correction by B.")
    expect(columns.nth(0)).to_contain_text("A thinks the sign is wrong")
    chief.page.get_by_label("Use dr_b's text").check()
    chief.page.get_by_role("button", name="Decide").click()
    chief.page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    expect(chief.page.locator("#panel .badge.ok")).to_be_visible()
    turn.refresh_from_db()
    assert turn.text == "Correction by B."
    assert IndependentReview.objects.filter(submitted_at__isnull=False).count() == 2


def test_blind_reviewers_answer_the_judge_each_for_themselves(live_server, new_tab):
    UserFactory(reviewer=True, username="dr_a")
    UserFactory(reviewer=True, username="dr_b")
    run = RunFactory()
    ReviewPolicy.objects.create(scenario=run.scenario, reviews_required=2)
    dialogue = dialogue_with_turns(3, run=run)
    turn = turn_of(dialogue, 1)
    Suggestion.objects.create(turn=turn, category="factual", severity=2, rationale="Sign wrong.")

    # Expert A dismisses the judge's mark.
    a = new_tab()
    log_in(a, live_server.url, "dr_a")
    a.page.get_by_role("button", name=re.compile("^Review next")).click()
    a.page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    mark = a.page.locator(f"#turn-{turn.pk} .suggestion")
    mark.get_by_role("button", name=re.compile("^Dismiss")).click()
    expect(a.page.locator(f"#turn-{turn.pk} .suggestion")).to_contain_text("dismissed by you")

    # Expert B sees the mark undecided, nothing of A's answer, and accepts it.
    b = new_tab()
    log_in(b, live_server.url, "dr_b")
    b.page.get_by_role("button", name=re.compile("^Review next")).click()
    b.page.wait_for_url(f"{live_server.url}{url('dialogue', dialogue)}")
    mark = b.page.locator(f"#turn-{turn.pk} .suggestion")
    expect(mark).to_have_class(re.compile("suggestion-undecided"))
    expect(mark).not_to_contain_text("dismissed")
    assert "dr_a" not in b.page.locator("main").inner_text()
    mark.get_by_role("button", name=re.compile("^Accept as flag")).click()
    b.page.locator(f"#turn-{turn.pk} .flag-open").wait_for()
    expect(b.page.locator(f"#turn-{turn.pk} .suggestion")).to_contain_text(
        "accepted as a flag by you"
    )

    # A, reloading, still sees only their own answer, and no flag of B's.
    a.page.reload()
    mark = a.page.locator(f"#turn-{turn.pk} .suggestion")
    expect(mark).to_contain_text("dismissed by you")
    expect(mark).not_to_contain_text("accepted")
    expect(a.page.locator(f"#turn-{turn.pk} .flag")).to_have_count(0)
    decisions = SuggestionDecision.objects.select_related("review__reviewer").order_by("pk")
    assert [(d.review.reviewer.username, d.status) for d in decisions] == [
        ("dr_a", "dismissed"),
        ("dr_b", "accepted"),
    ]
    assert a.csp_violations() == [] and b.csp_violations() == []
