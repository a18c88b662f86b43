"""Run pages and the generation admin in Debian chromium."""

from __future__ import annotations

import re
import threading

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser marker reports it (skip, or fail in CI)
    expect = None

from generation.models import Dialogue, GenerationRun
from review.models import DatasetExport, DialogueReview
from tests.factories import (
    DialogueFactory,
    RunFactory,
    ScenarioFactory,
    UserFactory,
    dialogue_with_turns,
)
from tests.tooling.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_cancelling_a_run_asks_first(live_server, new_tab):
    UserFactory(username="boss", is_staff=True, is_superuser=True)
    run = RunFactory(status=GenerationRun.Status.RUNNING, requested_count=3)
    dialogue_with_turns(2, run=run)
    DialogueFactory.create_batch(2, run=run, status=Dialogue.Status.PENDING)
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "boss")
    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    page.get_by_role("link", name="Cancel run…").click()
    expect(page.get_by_role("heading", name=f"Cancel run #{run.pk}?")).to_be_visible()
    expect(page.get_by_role("button", name="Yes, cancel the run")).to_be_focused()
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.RUNNING  # nothing happened yet
    page.get_by_role("link", name="No, keep it running").click()
    page.wait_for_url(f"{live_server.url}{run.get_absolute_url()}")
    page.get_by_role("link", name="Cancel run…").click()
    page.get_by_role("button", name="Yes, cancel the run").click()
    expect(page.locator(".messages")).to_contain_text("Cancelled: 2 unfinished dialogue(s)")
    expect(page.locator(".run-percent")).to_have_text("33%")
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED
    assert tab.csp_violations() == []


def test_admin_select_all_then_export_writes_the_file(live_server, new_tab, settings, tmp_path):
    """Admin › Dialogues › tick the header box › Select all › the action › Export."""
    settings.MEDIA_ROOT = str(tmp_path)
    UserFactory(username="ml", is_staff=True, is_superuser=True)
    run = RunFactory()
    for dialogue in [dialogue_with_turns(2, run=run) for _ in range(3)]:
        DialogueReview.objects.create(dialogue=dialogue, status="approved")
    DialogueFactory.create_batch(100, run=run, status=Dialogue.Status.CANCELLED)  # two pages
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "ml")
    page.goto(f"{live_server.url}/admin/generation/dialogue/")
    page.locator("#action-toggle").check()
    page.get_by_role("button", name=re.compile("Select all 103")).click()
    page.locator("select[name=action]").select_option("export_dialogues_action")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".export-summary")).to_contain_text("3 approved dialogues will be exported")
    page.get_by_role("button", name="Export 3 dialogues").click()
    expect(page.locator(".messagelist")).to_contain_text("3 exported")
    record = DatasetExport.objects.get()
    assert record.status == DatasetExport.Status.DONE and record.exported_count == 3
    assert record.filters == {}


def test_admin_launch_lands_on_the_run_page_and_the_admin_says_demo(
    live_server, new_tab, generation_held
):
    UserFactory(username="launcher", is_staff=True, is_superuser=True)
    scenario = ScenarioFactory(name="Geometry")
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "launcher")
    page.goto(f"{live_server.url}/admin/generation/generationrun/add/")
    expect(page.get_by_role("note")).to_contain_text("Demo LLM provider")
    # Styled like every admin form: required labels in bold, fields aligned in rows.
    label = page.locator("label.required[for=id_scenario]")
    assert label.evaluate("el => getComputedStyle(el).fontWeight") in {"700", "bold"}
    page.get_by_label("Scenario").select_option(str(scenario.pk))
    page.get_by_label("Number of dialogues").fill("2")
    page.get_by_role("button", name="Launch run").click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run = GenerationRun.objects.get()
    assert page.url == f"{live_server.url}{run.get_absolute_url()}"
    expect(page.locator("h1")).to_contain_text(f"Run #{run.pk}")
    assert tab.csp_violations() == []
    # Without a broker the launch generates on a thread of the server: it ends before the
    # test's database is flushed (the run finishing is test_admin's no-broker launch test).
    page.goto("about:blank")
    generation_held.set()
    for thread in threading.enumerate():
        if thread.name == "synthreview-inline-generation":
            thread.join(timeout=60)
