"""The console in a real browser: sign-in through the platform, schedule, overrides, retry; axe.

The app is served on 127.0.0.1 by a real HTTP server against the test database (real commits:
`committed_app`), and signs admins in through the test platform's OAuth server. Headless
Chromium drives it; axe-core checks every page against WCAG 2.x A and AA.

Set ALLIANCE_SCREENSHOT_DIR=docs/img to refresh the README's screenshot of the schedule page.
"""

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import select

from plugin.core.models import Practice
from tests.support.browser import (
    axe_violations,
    horizontal_overflow,
    save_screenshot,
    set_viewport,
)
from tests.support.console import add_problems
from tests.support.install import ACCOUNTS
from tests.support.invitations import InvitationFactory
from tests.support.platform_server import register_zoom_app, zoom_settings
from tests.support.ports import free_port
from tests.support.wsgi_thread import ThreadedServer

CONSOLE_PAGES = ["/console/", "/console/schedule", "/console/ehr", "/console/problems",
                 "/console/practice", "/console/tokens", "/console/audit"]  # fmt: skip
PUBLIC_PAGES = ["/", "/privacy", "/login"]
PHONE_WIDTH = 390


@pytest.fixture
def port() -> int:
    """Return the port the app will be served on (known before the app is configured)."""
    return free_port()


@pytest.fixture
def config(config, platform_server, port):
    """Point PUBLIC_BASE_URL at the served app and Zoom at the test platform server."""
    base_url = f"http://127.0.0.1:{port}"
    register_zoom_app(platform_server, base_url)
    return {**config, **zoom_settings(platform_server), "PUBLIC_BASE_URL": base_url}


@pytest.fixture
def live(committed_app, port):
    """Serve the app on 127.0.0.1; yield its base URL."""
    server = ThreadedServer(committed_app, "127.0.0.1", port, "alliance-check")
    yield server.url
    server.stop()


@pytest.fixture
def signed_in(browser, live, platform_server, committed_app):
    """Install Riverside through the platform's consent in the browser; return its practice."""
    platform_server.account = ACCOUNTS["riverside"]
    browser.get(f"{live}/install/zoom")
    assert browser.current_url == f"{live}/console/", browser.page_source[:2000]
    with committed_app.extensions["db"].sessions() as db:
        return db.scalar(select(Practice).where(Practice.account_id == "zoom-acct-riverside"))


def text_of(browser, css: str) -> str:
    """Return the visible text of the first element matching css."""
    return browser.find_element(By.CSS_SELECTOR, css).text


def fill(browser, field_id: str, value: str) -> None:
    """Replace what an input holds."""
    element = browser.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


def follow(browser, element) -> None:
    """Click a link or a form's button, and wait until the next page has replaced this one."""
    # A mark on the old page's window, rather than a reference to one of its elements:
    # chromedriver can fail (not just go stale) on an element whose page is being replaced.
    browser.execute_script("window.__leaving = true")
    element.click()
    # While the page is being swapped a script may find no document to run in: ask again.
    WebDriverWait(browser, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda driver: driver.execute_script(
            "return window.__leaving === undefined && document.readyState === 'complete'"
        )
    )


def click_button(browser, label: str, within: str = "main") -> None:
    """Click the button with this visible label inside the `within` element; wait for the page."""
    scope = browser.find_element(By.CSS_SELECTOR, within)
    [button] = [b for b in scope.find_elements(By.TAG_NAME, "button") if b.text == label]
    follow(browser, button)


def open_menu(browser, label: str) -> None:
    """Follow a link of the console's menu."""
    follow(browser, browser.find_element(By.LINK_TEXT, label))


def survey_path(app, practice) -> str:
    """Commit a sent invitation for the practice; return its questionnaire's path."""
    with app.extensions["db"].sessions() as db:
        _, token = InvitationFactory(app, db)(db.merge(practice))
    return f"/q/{token}"


def test_an_admin_changes_the_schedule_overrides_and_retries_in_the_browser(
    browser, live, signed_in, committed_app
):
    open_menu(browser, "Schedule")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Schedule"
    before = text_of(browser, "#asked-summary")

    fill(browser, "first_sessions", "6")
    fill(browser, "then_every", "3")
    click_button(browser, "Preview without saving")
    assert text_of(browser, "#preview-h") == "Preview (not saved)"
    previewed = text_of(browser, "#asked-summary")
    assert previewed == "Asked after sessions 1, 2, 3, 4, 5, 6, 9, 12, 15, 18."
    assert previewed != before
    rows = browser.find_elements(By.CSS_SELECTOR, "#preview tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows[5:9]] == [
        "yes", "no", "no", "yes",
    ]  # fmt: skip

    click_button(browser, "Save")
    assert "Saved as a new version" in text_of(browser, ".notice")
    assert text_of(browser, "#asked-summary") == previewed
    assert text_of(browser, "#preview-h") == "Preview"

    fill(browser, "o-practitioner_ref", "Practitioner/42")
    fill(browser, "o-first_sessions", "8")
    click_button(browser, "Save override")
    assert text_of(browser, ".notice") == "Override saved."
    assert "Practitioner/42" in text_of(browser, "#overrides")
    assert "first_sessions = 8" in text_of(browser, "#overrides")

    click_button(browser, "Remove", within="#overrides")
    assert "Override removed" in text_of(browser, ".notice")
    assert browser.find_elements(By.ID, "overrides") == []
    assert "No overrides" in text_of(browser, "main")

    with committed_app.extensions["db"].sessions() as db:
        _, invitation, _ = add_problems(db, db.merge(signed_in), datetime.now(UTC))
    open_menu(browser, "Problems")
    assert "The email could not be delivered." in text_of(browser, f"#invitation-{invitation.id}")
    click_button(browser, "Retry", within=f"#invitation-{invitation.id}")
    assert text_of(browser, ".notice") == "Queued again. It is tried within a minute."
    assert browser.find_elements(By.ID, f"invitation-{invitation.id}") == []
    assert "None." in text_of(browser, "#h-invitation + p")

    open_menu(browser, "Audit")
    audit = text_of(browser, "main")
    assert "invitation.retried" in audit and "override.removed" in audit


def check_page(browser, found: dict, label: str) -> None:
    """Record axe's violations at 1280 px and 390 px, and any overflow on a phone, under label."""
    set_viewport(browser, 1280, 900, mobile=False)
    found[label] = axe_violations(browser)
    set_viewport(browser, PHONE_WIDTH, 844)
    found[f"{label} at {PHONE_WIDTH} px"] = axe_violations(browser)
    if overflow := horizontal_overflow(browser):
        found[f"{label} at {PHONE_WIDTH} px"].append({"overflow_px": overflow})


def test_every_page_passes_axe_and_fits_a_phone(browser, live, committed_app, platform_server):
    found = {}
    for path in [*PUBLIC_PAGES, "/console/", "/no-such-page"]:  # signed out: sign-in and 404
        browser.get(live + path)
        check_page(browser, found, f"{path} (signed out)")

    platform_server.account = ACCOUNTS["riverside"]
    browser.get(f"{live}/install/zoom")
    assert browser.current_url == f"{live}/console/"
    with committed_app.extensions["db"].sessions() as db:
        practice = db.scalar(select(Practice))
        add_problems(db, practice, datetime.now(UTC))
    for path in CONSOLE_PAGES:
        browser.get(live + path)
        check_page(browser, found, path)
    browser.get(live + survey_path(committed_app, practice))
    check_page(browser, found, "/q/<token>")

    # Forms sent back with errors: the schedule, and the survey with nothing answered.
    browser.get(live + "/console/schedule")
    fill(browser, "first_sessions", "many")
    click_button(browser, "Save")
    check_page(browser, found, "/console/schedule (errors)")
    # API tokens: a name too long and no expiry; then a token made (shown once) and revoked.
    browser.get(live + "/console/tokens")
    browser.execute_script("document.getElementById('name').removeAttribute('maxlength')")
    fill(browser, "name", "x" * 101)
    fill(browser, "expires_days", "0")
    click_button(browser, "Make token")
    assert browser.find_elements(By.ID, "expires_days-error")
    check_page(browser, found, "/console/tokens (errors)")
    fill(browser, "name", "reporting script " * 5)
    fill(browser, "expires_days", "90")
    click_button(browser, "Make token")
    assert text_of(browser, "#new-token").startswith("acat_")
    check_page(browser, found, "/console/tokens (new token)")
    click_button(browser, "Revoke token", within="#tokens")
    assert "Token revoked" in text_of(browser, ".notice")
    check_page(browser, found, "/console/tokens (revoked)")
    # Video hosts on the EHR page: a mapping sent back with errors, then one mapped and listed.
    browser.get(live + "/console/ehr")
    fill(browser, "host_email", "avery at riverside")
    fill(browser, "host_practitioner", "p-7")
    click_button(browser, "Map host")
    assert browser.find_elements(By.ID, "host_email-error")
    check_page(browser, found, "/console/ehr (host errors)")
    fill(browser, "host_email", "avery@riverside.example")
    fill(browser, "host_practitioner", "Practitioner/p-7")
    click_button(browser, "Map host")
    assert "Saved" in text_of(browser, "#hosts .notice")
    assert "avery@riverside.example" in text_of(browser, "#hosts table")
    check_page(browser, found, "/console/ehr (host mapped)")
    browser.get(live + survey_path(committed_app, practice))
    browser.execute_script("document.querySelector('main form').noValidate = true")
    click_button(browser, browser.find_element(By.CSS_SELECTOR, "main form button").text)
    assert browser.find_elements(By.CSS_SELECTOR, ".error-summary")
    check_page(browser, found, "/q/<token> (errors)")

    assert {label: problems for label, problems in found.items() if problems} == {}


@pytest.mark.parametrize("page", ["schedule", "survey"])
def test_pages_fit_a_phone(browser, live, signed_in, committed_app, tmp_path, page):
    path = "/console/schedule" if page == "schedule" else survey_path(committed_app, signed_in)
    set_viewport(browser, PHONE_WIDTH, 844)
    browser.get(live + path)

    save_screenshot(browser, tmp_path / f"{page}-{PHONE_WIDTH}.png", full_page=True)
    assert browser.execute_script("return window.innerWidth") == PHONE_WIDTH
    assert horizontal_overflow(browser) == 0
    assert axe_violations(browser) == []


def test_screenshot_of_the_schedule_page(browser, live, signed_in, tmp_path):
    set_viewport(browser, 1280, 1400, mobile=False)
    browser.get(live + "/console/schedule")

    folder = Path(os.environ.get("ALLIANCE_SCREENSHOT_DIR") or tmp_path)
    shot = save_screenshot(browser, folder / "schedule.png")
    assert shot.stat().st_size > 10_000
    assert horizontal_overflow(browser) == 0
