"""The dashboards in Debian chromium: every page draws its plots under the CSP, cleanly."""

from __future__ import annotations

import pytest
from django.urls import reverse

from generation.models import GenerationRun
from tests.factories import UserFactory
from tests.review.test_insights import build_world
from tests.tooling.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _assert_clean(tab, response) -> None:
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert tab.csp_violations() == []
    assert tab.console_errors == []


def test_every_dashboard_draws_its_plots_without_errors(live_server, new_tab):
    world = build_world()
    UserFactory(is_staff=True, reviewer=True, username="lead")
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "lead")
    pages = {
        # Plots: every panel but the tables (cost, diversity).
        reverse("review:insights_run", args=[world.run.pk]): 7,
        reverse("review:insights_scenario", args=[world.run.scenario_id]): 12,
        reverse("review:insights"): 12,
        reverse("review:insights_team"): 4,
    }
    for path, plots in pages.items():
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200
        svg = page.locator("svg.plot")
        assert svg.count() == plots, path
        box = svg.first.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 40  # drawn, not collapsed
        # The text alternative: the data table opens from its summary.
        page.locator("details.insights-data summary").first.click()
        assert page.locator("details.insights-data table").first.is_visible()
        _assert_clean(tab, response)


def test_run_page_loads_its_dashboard_and_keeps_it_live(live_server, new_tab):
    world = build_world()
    GenerationRun.objects.filter(pk=world.run.pk).update(status="running")
    UserFactory(reviewer=True, username="expert")
    tab = new_tab()
    page = tab.page
    log_in(tab, live_server.url, "expert")
    run_url = f"{live_server.url}{reverse('generation:run_detail', args=[world.run.pk])}"
    response = page.goto(run_url)
    page.locator("#insights-board svg.plot").first.wait_for()
    assert page.locator("#panel-funnel").get_by_text("Exported").count() >= 1
    # The run page swaps its progress block every 2 s; the board inside it is kept through
    # those swaps (not loaded again each time) and refreshes itself every 5 s.
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/review/insights/" in r.url else None)
    progress: list[str] = []
    page.on("request", lambda r: progress.append(r.url) if r.url == run_url else None)
    page.wait_for_timeout(8500)
    # Loaded again on every progress swap, it would be fetched at least four times.
    assert len(progress) >= 4
    assert 1 <= len(fetched) <= 2
    assert page.locator("#insights-board svg.plot").count() == 7
    _assert_clean(tab, response)
