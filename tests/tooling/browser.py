"""Playwright fixtures: Debian chromium, one browser per session, a fresh context per page.

Each page records Content-Security-Policy violations and console errors so a test can assert
that the screen loaded cleanly under the CSP (no inline script or style was needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

CHROMIUM = os.environ.get("SYNTHREVIEW_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 15_000

# Runs before any page script; securitypolicyviolation events are the browser's own report.
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@dataclass
class Tab:
    page: object
    console_errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__cspViolations || []"))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One chromium per test module. Module scope, not session: Playwright's sync API keeps an
    event loop running in this thread, and Django's ORM refuses to run next to one unless
    DJANGO_ALLOW_ASYNC_UNSAFE is set; both are undone when the module's tests are done, so
    the rest of the suite (and subprocesses it starts) runs with the normal safety checks."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_tab(browser) -> Iterator[Callable[[], Tab]]:
    """Factory of fresh browser contexts (separate cookies: separate sessions)."""
    contexts = []

    def make() -> Tab:
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(_RECORD_VIOLATIONS)
        contexts.append(context)
        page = context.new_page()
        tab = Tab(page=page)
        page.on(
            "console",
            lambda message: (
                tab.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm prompts
        return tab

    yield make
    for context in contexts:
        context.close()


def log_in(tab: Tab, base_url: str, username: str, password: str = "pw") -> None:
    page = tab.page
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/review/")
