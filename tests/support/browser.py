"""A headless Chromium for the tests (Selenium 4), and axe-core's accessibility check on a page.

Debian's `chromium` and `chromium-driver` drive it (.ci/run installs them); Selenium never
downloads a driver nor reports usage. A test that needs the browser fails, never skips, when
they are missing. Use:

    def test_page(browser, live_url):
        browser.get(live_url + "/privacy")
        assert axe_violations(browser) == []
        set_viewport(browser, 390)
        assert horizontal_overflow(browser) == 0

axe-core is the npm package pinned in tests/support/browser/package.json.
"""

import base64
import json
import os
from pathlib import Path

import pytest

from tests.support import npm

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE_DIR = Path(__file__).parent / "browser"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.0, 2.1 and 2.2, levels A and AA.
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1280,900",
)  # fmt: skip

_RUN_AXE = """
const [context, options, done] = arguments;
axe.run(context || document, options).then(
  (results) => done({violations: results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map((n) => n.target.join(" ")),
  }))}),
  (error) => done({error: String(error)}),
);
"""


def start_browser(user_data_dir: Path):
    """Start headless Chromium through Debian's chromedriver, with a fresh profile."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver "
            "(.ci/run does when it runs as root)",
            pytrace=False,
        )
    # Set before Selenium is imported or starts anything: no usage statistics are sent.
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager is never asked to download one.
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture
def browser(tmp_path_factory):
    """Yield a headless Chromium with an empty profile; it quits after the test."""
    driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def axe_violations(driver, context=None, tags=WCAG_TAGS) -> list[dict]:
    """Run axe-core on the current page (or a CSS selector/context); return its violations.

    Each violation is {"id", "impact", "help", "targets"} (CSS selectors of the failing
    nodes), small enough that an `assert ... == []` message says what failed and where.
    """
    if not driver.execute_script("return typeof window.axe === 'object'"):
        npm.ensure_installed(AXE_DIR)
        # Through the driver, not a <script> element: the pages' CSP allows no scripts.
        driver.execute_script(AXE_JS.read_text())
    options = {"runOnly": {"type": "tag", "values": list(tags)}, "resultTypes": ["violations"]}
    result = driver.execute_async_script(_RUN_AXE, context, options)
    if "error" in result:
        raise RuntimeError(f"axe.run failed on {driver.current_url}: {result['error']}")
    return result["violations"]


def describe(violations: list[dict]) -> str:
    """Return violations as indented JSON, for an assertion message."""
    return json.dumps(violations, indent=1)


def set_viewport(driver, width: int, height: int = 900, mobile: bool | None = None) -> None:
    """Make the page's viewport exactly width x height CSS pixels (a phone's when narrow)."""
    mobile = width < 600 if mobile is None else mobile
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def horizontal_overflow(driver) -> int:
    """Return how many CSS pixels the page is wider than its viewport (0 when it fits)."""
    return driver.execute_script(
        "return Math.max(0, document.documentElement.scrollWidth - window.innerWidth)"
    )


def save_screenshot(driver, path: Path, full_page: bool = False) -> Path:
    """Save a PNG of the viewport (or of the whole page) to path."""
    params = {"format": "png", "captureBeyondViewport": full_page}
    if full_page:
        size = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
    data = driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data))
    return path
