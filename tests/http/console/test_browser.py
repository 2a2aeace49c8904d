"""The web console in a real browser: Debian's Chromium, headless, driven by Selenium.

Sign in as an admin, add a workflow from a file, see its preview, save it, run it and watch its
progress, see the image, open the gallery, the operations page with its charts and the jams, sign
out; a member key can't reach the admin pages.
A screenshot of each page is kept in out/screenshots/. The server runs on the test's event loop
while the browser is driven from a worker thread; every wait is an explicit condition.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, WORKFLOWS
from tests.fakes.comfyui import FakeComfyUI
from tests.http.console.test_console import console_settings
from tests.http_helpers import served

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = ROOT / "out" / "screenshots"
WAIT = 60  # seconds for any one condition: generous, for a machine whose cores are busy

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not os.environ.get("CI"),
    reason="Chromium and chromedriver are not installed (apt-get install chromium "
    "chromium-driver); with CI set this test always runs",
)


@pytest.fixture
def driver() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    browser.set_page_load_timeout(WAIT)
    try:
        yield browser
    finally:
        browser.quit()


class Console:
    """The browser on the console, with explicit waits and a screenshot per page."""

    def __init__(self, browser: Any, url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.browser = browser
        self.url = url
        self.wait = WebDriverWait(browser, WAIT)
        SHOTS.mkdir(parents=True, exist_ok=True)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def until(self, condition: Callable[[Any], Any], what: str) -> Any:
        return self.wait.until(lambda b: condition(b), message=what)

    def at(self, path: str) -> None:
        self.until(lambda b: b.current_url == self.url + path, f"at {path}")
        self.until(lambda b: b.execute_script("return document.readyState") == "complete", "loaded")

    def shot(self, name: str) -> None:
        self.browser.save_screenshot(str(SHOTS / f"{name}.png"))

    def sign_in(self, secret: str) -> None:
        self.browser.get(self.url + "/")
        self.find("#key").send_keys(secret)
        self.find("#sign-in").click()
        self.at("/workflows")

    def csp_violations(self) -> list[str]:
        logs = self.browser.get_log("browser")
        return [e["message"] for e in logs if "Content Security Policy" in e["message"]]


def admin_tour(
    console: Console,
    secret: str,
    upload: Path,
    on_loop: Callable[..., Any],
    sample: Callable[[], None],
) -> None:
    browser = console.browser
    browser.get(console.url + "/")
    console.find("#sign-in-form")
    console.shot("01-sign-in")
    console.sign_in(secret)
    console.shot("02-workflows")

    # add a workflow by file input: its preview, then Save
    console.find("#nav-add").click()
    console.at("/add-workflow")
    console.find("#workflow-file").send_keys(str(upload))
    console.find('#preview-options tr[data-option="prompt"]')
    assert console.find("#preview-name").text == "harbour-lights"
    assert console.find("#preview-title").text == "Harbour Lights"
    assert console.find('tr[data-option="steps"]').text.startswith("steps")
    console.shot("03-add-preview")
    console.find("#save-button").click()
    console.at("/workflows/harbour-lights")
    assert console.find("#workflow-title").text == "Harbour Lights"
    snippets = [s.text for s in browser.find_elements("css selector", "code.snippet")]
    assert any("curl -X POST" in s and "/v1/workflows/harbour-lights/jobs" in s for s in snippets)
    console.shot("04-workflow")

    # run it: held at its first step, then one step, then the rest
    on_loop("hold_steps")
    prompt = console.find("#field-prompt")
    prompt.clear()
    prompt.send_keys("harbour lights at night")
    steps = console.find("#field-steps")
    steps.clear()
    steps.send_keys("4")
    console.find("#run-button").click()
    run = console.find("#runs .run")
    console.until(lambda b: run.get_attribute("data-state") == "running", "the job runs")
    on_loop("release_steps", 1)
    console.until(lambda b: run.get_attribute("data-progressed") == "true", "progress shown")
    assert "step" in run.find_element("css selector", ".status").text
    browser.execute_script("arguments[0].scrollIntoView()", run)
    console.shot("05-run-progress")
    on_loop("release_steps")
    console.until(lambda b: run.get_attribute("data-state") == "done", "the job is done")
    image = console.find("#runs .run img.output")
    console.until(
        lambda b: b.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        ),
        "the image loaded",
    )
    browser.execute_script("arguments[0].scrollIntoView()", run)
    console.shot("06-run-result")
    # the whole page after a run, as the README shows it (docs/images/console-workflow.png)
    size = browser.get_window_size()
    browser.set_window_size(1200, 2250)
    browser.execute_script("window.scrollTo(0, 0)")
    console.shot("06-workflow-after-run")
    browser.set_window_size(size["width"], size["height"])

    # the gallery has it, with its values and a link to run it again
    browser.find_element("link text", "Gallery").click()
    console.at("/gallery")
    result = console.find("#gallery .result")
    gallery_image = result.find_element("css selector", "img")
    console.until(
        lambda b: b.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", gallery_image
        ),
        "the gallery's image loaded",
    )
    assert "harbour lights at night" in result.text
    again = result.find_element("css selector", "a.run-again").get_attribute("href")
    assert "/workflows/harbour-lights?" in again
    console.shot("07-gallery")
    browser.get(again)
    assert console.find("#field-prompt").get_attribute("value") == "harbour lights at night"

    # operations: the backend, the empty queue, the charts of the samples taken so far
    sample()
    console.find("#nav-operations").click()
    console.at("/operations")
    backend = console.find("#backends tbody tr")
    assert backend.get_attribute("data-backend") and "idle" in backend.text
    console.find("#queue-empty")
    lines = browser.find_elements("css selector", "#chart-busy path.series")
    assert [line.get_attribute("data-series") for line in lines] == [
        backend.get_attribute("data-backend")
    ]
    console.find("#chart-job-time")
    console.shot("08-operations")
    console.find("#nav-jams").click()
    console.at("/jams")
    console.find("#jams-empty")
    console.shot("09-jams")

    console.find("#sign-out").click()
    console.at("/")
    console.find("#sign-in-form")
    console.shot("10-signed-out")
    browser.get(console.url + "/workflows")
    console.at("/")  # signed out: back to sign in
    assert console.csp_violations() == []


def member_tour(console: Console, secret: str) -> None:
    browser = console.browser
    console.sign_in(secret)
    assert browser.find_elements("css selector", "#nav-add") == []
    browser.get(console.url + "/add-workflow")
    assert "admin keys only" in console.find("#error").text
    console.shot("11-member-refused")
    assert browser.find_elements("css selector", "#nav-operations") == []
    browser.get(console.url + "/operations")
    assert "admin keys only" in console.find("#error").text
    browser.get(console.url + "/jams")
    console.find("#jams-empty")
    browser.get(console.url + "/workflows/harbour-lights")
    console.find("#run-form")
    assert browser.find_elements("css selector", "#delete-button") == []
    console.find("#sign-out").click()
    console.at("/")


async def test_the_console_in_a_browser(driver: Any, tmp_path: Path, comfy: FakeComfyUI) -> None:
    upload = tmp_path / "Harbour Lights.json"
    shutil.copy(WORKFLOWS / "sd15-txt2img.json", upload)
    loop = asyncio.get_running_loop()

    def on_loop(method: str, *args: Any) -> None:
        """Call a method of the fake ComfyUI on the server's loop, from the browser's thread."""
        asyncio.run_coroutine_threadsafe(_call(getattr(comfy, method), *args), loop).result(WAIT)

    async with served(console_settings(tmp_path, comfy)) as srv:
        admin = srv.key("boss", role="admin")
        member = srv.key("visitor")
        console = Console(driver, srv.url)

        def sample() -> None:
            """Take a sample of the last hour now, on the server's loop."""
            asyncio.run_coroutine_threadsafe(_call(srv.api.history.sample), loop).result(WAIT)

        await asyncio.to_thread(admin_tour, console, admin.secret, upload, on_loop, sample)
        assert "harbour-lights" in srv.engine.workflows
        await asyncio.to_thread(member_tour, console, member.secret)


async def _call(method: Callable[..., Any], *args: Any) -> None:
    method(*args)
