"""The therapist's view in headless Chromium: launched from the EHR, at a side panel's width.

The app is served for real on 127.0.0.1 (real commits, `committed_app`); the EHR is the
strict FHIR test server with the test authorization server, which consents on its own, so
the browser follows the whole launch: /launch, the EHR's authorize, our callback, the view.
"""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from plugin.ehr.keys import generate
from plugin.install.practices import add_practice
from tests.support import fhir_server
from tests.support.browser import axe_violations, horizontal_overflow, set_viewport
from tests.support.data import load_json
from tests.support.launch import LAUNCH_CLIENT, LAUNCH_SCOPES, launch_flags, seed, session_bundles
from tests.support.ports import free_port
from tests.support.wsgi_thread import ThreadedServer

HISTORY = load_json("launch/history.json")
PATIENT = HISTORY["patient"]
# The EHR side panel the view is designed for.
PANEL_WIDTH = 400


@pytest.fixture
def port() -> int:
    """Return the port the app will be served on (known before the app is configured)."""
    return free_port()


@pytest.fixture
def config(config, port):
    """Point PUBLIC_BASE_URL at the served app, so the launch comes back to it."""
    return {**config, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}


@pytest.fixture(scope="module")
def ehr(oauth_server):
    """A strict FHIR server trusting the test authorization server, offering EHR launch."""
    with fhir_server.running(*launch_flags(oauth_server)) as server:
        yield server


@pytest.fixture
def live(committed_app, port):
    """Serve the app on 127.0.0.1; yield its base URL."""
    server = ThreadedServer(committed_app, "127.0.0.1", port, "alliance-check")
    yield server.url
    server.stop()


@pytest.fixture
def launch(committed_app, live, oauth_server, ehr) -> str:
    """Connect a practice with a launch client, seed its client's 12 sessions; return a launch."""
    oauth_server.reset()
    ehr.reset()
    with committed_app.extensions["db"].sessions() as db:
        add_practice(
            db,
            account_id="demo",
            name="Riverside Therapy",
            timezone="America/New_York",
            ehr_target="ndjson:var/ehr",
            root=committed_app.config["INSTANCE_PATH"],
        )
        generate(db, committed_app.extensions["vault"], "ES384")
    jwks = committed_app.test_client().get("/.well-known/jwks.json").json
    oauth_server.register_client(
        "alliance", jwks=jwks, scopes="system/QuestionnaireResponse.c system/Observation.c"
    )
    oauth_server.register_launch_client(LAUNCH_CLIENT, f"{live}/launch/callback", LAUNCH_SCOPES)
    result = committed_app.test_cli_runner().invoke(
        args=[
            *("ehr", "connect", "demo", ehr.base_url),
            *("--client-id", "alliance", "--launch-client-id", LAUNCH_CLIENT),
        ]
    )
    assert result.exit_code == 0, result.output
    system = committed_app.config["FHIR_IDENTIFIER_SYSTEM"]
    seed(ehr.base_url, oauth_server, session_bundles(HISTORY["sessions"], PATIENT, system))
    return oauth_server.register_launch(PATIENT, aud=ehr.base_url, encounter=f"{PATIENT}-e12")


def test_the_launched_view_passes_axe_and_fits_an_ehr_side_panel(browser, live, ehr, launch):
    set_viewport(browser, PANEL_WIDTH, 900, mobile=False)
    browser.get(f"{live}/launch?iss={ehr.base_url}&launch={launch}")
    WebDriverWait(browser, 15).until(lambda driver: driver.current_url == f"{live}/launch/view")
    table = browser.find_element(By.CSS_SELECTOR, "main table")
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 12
    assert browser.find_elements(By.CSS_SELECTOR, "main svg")
    assert axe_violations(browser) == []
    assert horizontal_overflow(browser) == 0
