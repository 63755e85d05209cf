"""Regenerate docs/serve-page.png, the README's picture of the `castkeep serve` web page, with no photo of
anyone in it: the four characters are synthetic renders (docs/synthetic_faces.py).

    python docs/make_serve_screenshot.py --models ../shared/models/buffalo_s_lite

Renders each character at yaw -30, 0 and +30 degrees into a temporary folder, starts a real `castkeep serve` on a
temporary store on a free local port, registers the characters through the page's form in headless chromium
(Debian's chromium and chromedriver, through selenium as tests/serve/test_live.py drives them), drops a new render
of Bram (yaw -10, pitch +6) on identify, opens Bram's references, and saves the top of the page as an optimised
PNG. Nothing but the screenshot is written outside the temporary folder. About 15 s on two CPU cores.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_faces import CAST, CanonicalMesh, painted_texture, render  # noqa: E402

DOCS = Path(__file__).resolve().parent
REFERENCE_YAWS = (-30, 0, 30)
PROBE = ("Bram", -10.0, 6.0)  # a view none of its references has (name, yaw, pitch)
WIDTH = 1200
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def write_renders(folder: Path, landmarker: Path) -> tuple[dict[str, list[Path]], Path]:
    """Each character's reference renders, and the probe render; PNGs in `folder`."""
    mesh = CanonicalMesh.from_task(landmarker)
    references: dict[str, list[Path]] = {}
    probe = folder / f"{PROBE[0].lower()}-new-render.png"
    for character in CAST:
        texture = painted_texture(mesh, character)
        views = [(folder / f"{character.name.lower()}-yaw{yaw:+d}.png", float(yaw), 0.0) for yaw in REFERENCE_YAWS]
        if character.name == PROBE[0]:
            views.append((probe, PROBE[1], PROBE[2]))
        for path, yaw, pitch in views:
            image = render(mesh, character, yaw=yaw, pitch=pitch, size=448, texture=texture)
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        references[character.name] = [path for path, _, _ in views if path != probe]
    return references, probe


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(store: Path, models: str, log: Path, timeout: float = 120.0) -> Iterator[str]:
    """`castkeep serve` on `store` in a subprocess on a free local port; yields its URL once /api/status answers."""
    port = _free_port()
    command = [sys.executable, "-m", "castkeep", "serve", "--store", str(store), "--models", models, "--port", str(port),
               "--workers", "1"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"castkeep serve exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"castkeep serve did not answer in {timeout:g} s: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def headless_chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((p for p in CHROMIUM if os.path.exists(p)), shutil.which("chromium"))
    driver = next((p for p in CHROMEDRIVER if os.path.exists(p)), shutil.which("chromedriver"))
    if binary is None or driver is None:
        raise SystemExit("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},1000", "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(argument)
    options.binary_location = binary
    return webdriver.Chrome(service=Service(driver), options=options)


def _images_loaded(browser: Any) -> bool:
    from selenium.webdriver.common.by import By

    return all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
               for image in browser.find_elements(By.CSS_SELECTOR, "img") if image.is_displayed())


def drive_page(browser: Any, url: str, references: dict[str, list[Path]], probe: Path, screenshot: Path) -> None:
    """Register every character through the page's form, identify the probe, open its character, screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def gallery_holds(count: int) -> Callable[[Any], bool]:
        return lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery li")) == count

    wait = WebDriverWait(browser, 120)
    browser.get(f"{url}/")
    wait.until(lambda b: b.find_element(By.ID, "gallery-empty").is_displayed())
    for count, (name, paths) in enumerate(references.items(), start=1):
        seed = next(character.seed for character in CAST if character.name == name)
        browser.find_element(By.ID, "register-name").send_keys(name)
        browser.find_element(By.ID, "register-description").send_keys(f"synthetic render, seed {seed}")
        browser.find_element(By.ID, "register-tags").send_keys("synthetic")
        browser.find_element(By.ID, "register-input").send_keys("\n".join(str(path) for path in paths))
        browser.find_element(By.CSS_SELECTOR, "#register-form button").click()
        wait.until(gallery_holds(count))
    browser.refresh()  # a fresh page: no registration message above the result
    wait.until(gallery_holds(len(references)))
    browser.find_element(By.ID, "probe-input").send_keys(str(probe))
    wait.until(lambda b: b.find_element(By.ID, "result").get_attribute("data-best"))
    best = browser.find_element(By.ID, "result").get_attribute("data-best")
    rows = browser.find_elements(By.CSS_SELECTOR, "#result-table tbody tr")
    verdicts = [row.find_elements(By.TAG_NAME, "td")[-1].text for row in rows]
    if best != PROBE[0] or verdicts != ["same person"] + ["different"] * (len(references) - 1):
        raise RuntimeError(f"identify named {best!r} with verdicts {verdicts}, not {PROBE[0]!r} alone: the renders or "
                           "the models changed (pick another PROBE view)")
    card = next(c for c in browser.find_elements(By.CSS_SELECTOR, "#gallery li") if c.get_attribute("data-name") == best)
    card.click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#references img")) == len(references[best]))
    browser.execute_script("document.activeElement.blur()")
    # Grow the window to the bottom of the character's panel, so the screenshot holds the page down to it.
    bottom = int(browser.execute_script(
        "return document.querySelector('#detail').getBoundingClientRect().bottom + window.scrollY + 12"))
    chrome = int(browser.execute_script("return window.outerHeight - window.innerHeight"))
    browser.set_window_size(WIDTH, bottom + chrome)
    browser.execute_script("window.scrollTo(0, 0)")
    wait.until(_images_loaded)
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    if errors:
        raise RuntimeError(f"the page logged errors: {errors}")
    with Image.open(io.BytesIO(browser.get_screenshot_as_png())) as image:
        page = image.convert("RGB").crop((0, 0, image.width, min(image.height, bottom)))
    # Lossless, zlib at its best (about 220 KB): 256 colours would halve it but posterise the faces' shading.
    page.save(screenshot, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=os.environ.get("CASTKEEP_MODELS"),
                        help="model pack folder or name (default: $CASTKEEP_MODELS)")
    parser.add_argument("--landmarker", help="face_landmarker.task (default: found as castkeep finds it)")
    parser.add_argument("--out", type=Path, default=DOCS / "serve-page.png")
    parser.add_argument("--keep", type=Path, help="also copy the renders here, to look at them")
    args = parser.parse_args(argv)
    if not args.models:
        parser.error("--models or $CASTKEEP_MODELS is needed")
    from castkeep.landmarks.mesh import resolve_landmarker

    landmarker = resolve_landmarker(args.landmarker, search=(Path(args.models),))
    with tempfile.TemporaryDirectory(prefix="castkeep-screenshot-") as temporary:
        folder = Path(temporary)
        renders = folder / "renders"
        renders.mkdir()
        references, probe = write_renders(renders, landmarker)
        if args.keep:
            shutil.copytree(renders, args.keep, dirs_exist_ok=True)
        with serving(folder / "store", args.models, folder / "server.log") as url:
            browser = headless_chromium()
            try:
                drive_page(browser, url, references, probe, args.out)
            finally:
                browser.quit()
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
