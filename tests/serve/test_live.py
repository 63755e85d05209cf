"""A real `castkeep serve` process: HTTP on a local port, the same answers as the CLI, and the web page in a
real headless browser (Debian's chromium and chromedriver through selenium)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import MARA, THEO

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "bench-results" / "serve"  # the browser test's screenshot is kept here (git-ignored)
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def test_a_real_server_answers_what_the_cli_answers(live_server, cli):
    import httpx

    probe = THEO[5]
    with open(probe, "rb") as handle:
        answer = httpx.post(f"{live_server.url}/api/identify", files={"image": (probe.name, handle, "image/jpeg")}, timeout=60)
    assert answer.status_code == 200, answer.text
    done = cli("identify", str(probe), "--store", str(live_server.store), "--json")
    assert done.returncode == 0, done.stderr
    assert answer.json()["matches"] == json.loads(done.stdout)


def _browser():
    """A headless chromium driven by its chromedriver, or None (the test fails in CI, skips elsewhere)."""
    selenium = pytest.importorskip("selenium", reason="the browser test needs selenium (castkeep[test])")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((p for p in CHROMIUM if os.path.exists(p)), shutil.which("chromium"))
    driver = next((p for p in CHROMEDRIVER if os.path.exists(p)), shutil.which("chromedriver"))
    if binary is None or driver is None:
        message = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1300"):
        options.add_argument(argument)
    options.binary_location = binary
    assert selenium.__version__
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_page_identifies_an_uploaded_photo(live_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(f"{live_server.url}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery li")) == 2)
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#gallery .name")] == ["Mara", "Theo"]
        # The probe goes in through the page's file input, as a dropped or chosen file does.
        browser.find_element(By.ID, "probe-input").send_keys(str(MARA[4]))
        wait.until(lambda b: b.find_element(By.ID, "result").get_attribute("data-best"))
        assert browser.find_element(By.ID, "result").get_attribute("data-best") == "Mara"
        first = browser.find_elements(By.CSS_SELECTOR, "#result-table tbody tr")[0]
        cells = [c.text for c in first.find_elements(By.TAG_NAME, "td")]
        assert cells[1] == "1. Mara" and cells[-1] == "same person"
        assert all(cell.endswith("%") for cell in cells[2:5])  # P(same) by ArcFace, dlib and fused
        assert "Best match: Mara" in browser.find_element(By.ID, "result-summary").text
        # The character's page: its reference crops load.
        browser.find_elements(By.CSS_SELECTOR, "#gallery li")[0].click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#references img")) == 3)
        wait.until(lambda b: all(b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                                 for img in b.find_elements(By.TAG_NAME, "img")))
        # The Runs view loaded its jobs and run folders (none yet on this server) and the generate form is there.
        wait.until(lambda b: b.find_element(By.ID, "runs-empty").is_displayed())
        assert browser.find_element(By.ID, "generate-form").is_displayed()
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "page.png"))
        shutil.copy(ARTIFACTS / "page.png", tmp_path / "page.png")
    finally:
        browser.quit()


def test_the_page_asks_once_for_the_token_of_a_server_whose_reads_need_it(tmp_path):
    """--token-reads in a real browser: the page loads, shows nothing but the token field; the token typed once
    signs it in (a session cookie), and the gallery, the reference crops (images: no header), identify and the
    Runs view then work."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    from serve_helpers import photo_files, start_server, stop_server

    token = "studio-lan-token"
    server = start_server(tmp_path / "store", tmp_path / "server.log", "--token", token, "--token-reads", "--workers", "1")
    browser = None
    try:
        registered = httpx.post(f"{server.url}/api/characters", data={"name": "Mara"}, files=photo_files(MARA[:3]),
                                headers={"Authorization": f"Bearer {token}"}, timeout=120)
        assert registered.status_code == 201, registered.text
        browser = _browser()
        browser.get(f"{server.url}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: "needs its token" in b.find_element(By.ID, "message").text)
        assert browser.find_element(By.ID, "token").is_displayed()
        assert browser.find_elements(By.CSS_SELECTOR, "#gallery li") == []
        field = browser.find_element(By.ID, "token")
        field.send_keys(token, Keys.TAB)  # typed once: the change signs in and loads the page
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery li")) == 1)
        wait.until(lambda b: b.find_element(By.ID, "runs-empty").is_displayed())
        browser.find_elements(By.CSS_SELECTOR, "#gallery li")[0].click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#references img")) == 3)
        wait.until(lambda b: all(b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                                 for img in b.find_elements(By.CSS_SELECTOR, "#gallery img, #references img")))
        browser.find_element(By.ID, "probe-input").send_keys(str(MARA[4]))
        wait.until(lambda b: b.find_element(By.ID, "result").get_attribute("data-best"))
        assert browser.find_element(By.ID, "result").get_attribute("data-best") == "Mara"
        # The only console errors are the reads refused before the token was typed.
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert all("401" in message for message in errors), errors
        cookies = {c["name"]: c for c in browser.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]}  # path /api/
        assert cookies["castkeep_session"]["httpOnly"] and cookies["castkeep_session"]["value"] != token
    finally:
        if browser is not None:
            browser.quit()
        stop_server(server)
