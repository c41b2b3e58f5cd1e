"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium through
Debian's chromedriver, against a real gateway over two fake neurons. The page asks for the admin
key, shows both nodes, a load clicked in the page happens, a drain clicked in the page moves the
model, and a screenshot of it goes into the docs."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..faults.servers import ADMIN, ADMIN_KEY, API
from ..helpers import chat
from .conftest import Ops

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "img" / "dashboard.png"
"""Rewritten by a run with CORTEX_UPDATE_SCREENSHOT=1 (docs/operations.md shows it)."""

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (scripts/debian-packages.txt)",
        allow_module_level=True,
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        if service.process is not None and service.process.poll() is None:
            service.process.kill()  # the chromedriver we started, by its own handle
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Wait for `condition` to be truthy (checked every 100 ms), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except Exception:  # the page is being redrawn under us: try again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("the page did not get there in time")
        time.sleep(0.1)


def loaded_on(ops: Ops, model: str) -> list[str]:
    status = httpx.get(f"{ops.gateway.url}/admin/status", headers=ADMIN, timeout=10).json()
    return next(m["loaded_on"] for m in status["models"] if m["id"] == model)


def click(browser: Any, selector: str) -> None:
    """Click a button of the page and accept its confirmation."""
    from selenium.webdriver.common.by import By

    wait_until(lambda: browser.find_element(By.CSS_SELECTOR, selector)).click()
    wait_until(lambda: browser.switch_to.alert).accept()


def test_the_dashboard_shows_the_fleet_and_acts_on_it(
    ops: Ops, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    url = ops.gateway.url
    httpx.post(f"{url}/admin/models/unload", json={"model": "m2"}, headers=ADMIN, timeout=30)
    browser.get(f"{url}/ui")
    key = wait_until(lambda: browser.find_element(By.ID, "key"))
    assert browser.find_element(By.ID, "board").get_attribute("hidden") is not None
    key.send_keys(ADMIN_KEY)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()

    cards = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#nodes .card"))
    assert {card.get_attribute("data-node") for card in cards} == {"a", "b"}
    assert all(card.get_attribute("data-state") == "up" for card in cards)
    assert browser.execute_script("return window.localStorage.length") == 0  # session only

    click(browser, 'button[data-action="load on a"][data-target="m2@a"]')
    wait_until(lambda: loaded_on(ops, "m2") == ["a"])
    wait_until(lambda: "loaded on a" in _row(browser, "m2"))

    click(browser, 'button[data-action="drain"][data-target="a"]')
    wait_until(lambda: loaded_on(ops, "m2") == ["b"])
    wait_until(lambda: _card_state(browser, "a") == "cordoned")
    wait_until(lambda: "moved m2 to b" in browser.find_element(By.ID, "message").text)

    for stream in (False, True, True):  # some traffic for the figures and the recent list
        body = {**chat("m2", "hello there"), "stream": stream}
        httpx.post(f"{url}/v1/chat/completions", json=body, headers=API, timeout=30)
    httpx.post(f"{url}/v1/chat/completions", json=chat("no-such-model"), headers=API)
    wait_until(lambda: "404" in browser.find_element(By.ID, "recent").text)
    wait_until(lambda: "ms" in _row(browser, "m2"))  # TTFT measured on the streams
    browser.find_element(By.CSS_SELECTOR, "#placement button").click()
    wait_until(lambda: browser.find_element(By.ID, "placement-result").text)
    update = os.environ.get("CORTEX_UPDATE_SCREENSHOT") == "1"
    shot = DOCS_SCREENSHOT if update else tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    click(browser, 'button[data-action="uncordon"][data-target="a"]')
    wait_until(lambda: _card_state(browser, "a") == "up")


def _row(browser: Any, model: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = browser.find_element(By.CSS_SELECTOR, f'tr[data-model="{model}"]').text
    return text


def _card_state(browser: Any, node: str) -> str | None:
    from selenium.webdriver.common.by import By

    card = browser.find_element(By.CSS_SELECTOR, f'.card[data-node="{node}"]')
    state: str | None = card.get_attribute("data-state")
    return state
