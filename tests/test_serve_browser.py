"""The playground page in a real browser: Debian's chromium, headless, driven by Selenium
through the system chromedriver (no browser download). Skips, saying why, when either is
not installed (`apt-get install chromium chromium-driver`; .ci/run does that)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
from test_serve_engine import CharEngine

from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.engine import SamplingParams
from gptlab.serve.server import serve_in_thread

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: "
                                "pip install -e '.[test]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = _find("chromium", "/usr/bin/chromium", "chromium-browser")
    driver_path = _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver); not found on PATH")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.TemporaryDirectory(prefix="gptlab-chromium-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile.name}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def set_field(driver, element_id: str, value) -> None:
    """Set an input's value the way typing would, firing its input event."""
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input'));", element_id, str(value))


def stats_state(driver) -> str | None:
    return driver.find_element(By.ID, "stats").get_attribute("data-state")


def test_generate_streams_the_same_text_as_the_api(browser):
    engine = CharEngine(delay_s=0.005)
    app = create_app(engine, ServerSettings(max_tokens_limit=200))
    expected = engine.complete("To be", SamplingParams(max_tokens=40, temperature=0.8,
                                                       seed=42)).read()
    with serve_in_thread(app) as url:
        browser.get(url + "/")
        WebDriverWait(browser, 10).until(
            lambda d: "char-test" in d.find_element(By.ID, "model").text)
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("To be")
        set_field(browser, "max_tokens", 40)
        set_field(browser, "temperature", 0.8)
        browser.find_element(By.ID, "seed").send_keys("42")
        browser.find_element(By.ID, "generate").click()
        WebDriverWait(browser, 20).until(lambda d: stats_state(d) == "done")
        output = browser.find_element(By.ID, "completion").text
        stats = browser.find_element(By.ID, "stats").text
    assert output == expected.strip()  # .text drops trailing white space
    assert "40 tokens" in stats and "tokens/s" in stats
    assert browser.find_element(By.ID, "error").text == ""


def test_stop_ends_the_stream_and_frees_the_server(browser):
    app = create_app(CharEngine(delay_s=0.05), ServerSettings(max_tokens_limit=1000))
    slots = app.state.gptlab.slots
    with serve_in_thread(app) as url:
        browser.get(url + "/")
        set_field(browser, "max_tokens", 1000)  # 50 s unless stopped
        browser.find_element(By.ID, "generate").click()
        WebDriverWait(browser, 10).until(
            lambda d: len(d.find_element(By.ID, "completion").text) >= 3)
        assert browser.find_element(By.ID, "generate").get_attribute("disabled") == "true"
        browser.find_element(By.ID, "stop").click()
        WebDriverWait(browser, 10).until(lambda d: stats_state(d) == "stopped")
        shown = browser.find_element(By.ID, "completion").text
        deadline = time.monotonic() + 10
        while slots.used and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slots.used == 0  # the server saw the disconnect and ended the generation
        assert browser.find_element(By.ID, "completion").text == shown
    assert "stopped" in browser.find_element(By.ID, "stats").text
    assert browser.find_element(By.ID, "generate").get_attribute("disabled") is None
    assert 3 <= len(shown) < 1000
