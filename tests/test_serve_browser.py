"""The playground page in a real browser: Debian's chromium, headless, driven by Selenium
through the system chromedriver (no browser download). Skips, saying why, when either is
not installed (`apt-get install chromium chromium-driver`; .ci/run does that)."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from test_serve_engine import CharEngine

from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.engine import ModelEngine, SamplingParams
from gptlab.serve.server import serve_in_thread

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: "
                                "pip install -e '.[test]'")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
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


@pytest.fixture(scope="module")
def tiny_engine(tiny_run):
    return ModelEngine.from_run_dir(tiny_run)


def canvas_colours(driver, canvas_id: str) -> int:
    """How many distinct colours the canvas holds (1: blank)."""
    return driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const seen = new Set();"
        "for (let i = 0; i < px.length; i += 4) seen.add(px[i] << 16 | px[i + 1] << 8 | px[i + 2]);"
        "return seen.size;", canvas_id)


def chip_weights(driver) -> list[str]:
    return [c.get_attribute("data-weight") for c in driver.find_elements(By.CSS_SELECTOR, ".chip")]


def test_inspect_tab_shows_chips_alternatives_and_attention(browser, tiny_engine):
    image = pytest.importorskip("PIL.Image", reason="Pillow (a matplotlib dependency) is needed")
    text = "First Citizen"
    with serve_in_thread(create_app(tiny_engine)) as url:
        browser.set_window_size(1200, 1000)
        browser.get(url + "/")
        browser.find_element(By.ID, "tab-inspect").click()
        assert browser.find_element(By.ID, "page-complete").is_displayed() is False
        set_field(browser, "inspect-text", text)
        WebDriverWait(browser, 10).until(
            lambda d: d.find_element(By.ID, "inspect-status").get_attribute("data-state") == "done")
        chips = browser.find_elements(By.CSS_SELECTOR, "#chips .chip")
        assert len(chips) == len(text)
        assert [c.get_attribute("data-id") for c in chips] == [
            str(i) for i in tiny_engine.tokenizer.encode(text)]

        ActionChains(browser).move_to_element(chips[3]).perform()
        tooltip = browser.find_element(By.ID, "tooltip")
        WebDriverWait(browser, 5).until(lambda d: tooltip.is_displayed())
        assert "top guesses" in tooltip.text
        assert f"id {chips[3].get_attribute('data-id')}" in tooltip.text
        assert len(tooltip.text.splitlines()) == 3 + 5  # header, p, title, k=5 alternatives

        assert all(w in (None, "") for w in chip_weights(browser))
        chips[6].click()
        row = browser.find_element(By.ID, "attn-row")
        WebDriverWait(browser, 5).until(lambda d: row.get_attribute("data-query") == "6")
        first = chip_weights(browser)
        assert all(first[j] for j in range(7)) and float(first[6]) > 0
        assert sum(float(w) for w in first) == pytest.approx(1, abs=2e-3)
        assert "query" in chips[6].get_attribute("class")
        assert "future" in chips[9].get_attribute("class")
        assert canvas_colours(browser, "attn-map") > 1
        assert canvas_colours(browser, "attn-1-1") > 1

        Select(browser.find_element(By.ID, "layer")).select_by_value("1")
        Select(browser.find_element(By.ID, "head")).select_by_value("1")
        assert (row.get_attribute("data-layer"), row.get_attribute("data-head")) == ("1", "1")
        assert chip_weights(browser) != first
        assert "chosen" in browser.find_element(By.ID, "attn-1-1").get_attribute("class")

        png = browser.get_screenshot_as_png()
    shot = image.open(io.BytesIO(png)).convert("RGB")
    colours = shot.getcolors(maxcolors=1 << 20)
    assert shot.size[0] > 100 and colours is not None and len(colours) > 10
