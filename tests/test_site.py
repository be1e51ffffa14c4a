"""The built book, checked in a real browser (headless Chromium through Selenium).

The session builds the site once (``jupyter-book build . -W --keep-going`` into
``_build/html``; set ``RKD_SITE_BUILT=1`` to reuse an existing build), serves it on
127.0.0.1, then opens the index and every page of ``_toc.yml`` and checks what a
reader would notice first:

* the page loads and has its title;
* every image loads (``naturalWidth > 0``): the build is offline, so a remote badge
  or a missing file shows up here;
* notebook pages carry the "Open in Colab" link to their notebook on GitHub;
* chapters 1 and 2 have MathJax-rendered math, and no page has a MathJax error;
* the page requests nothing from the local server that is missing (no 404s).

A screenshot of every page (first screen) lands in ``_build/screenshots/<page>.png``
and a full-length one in ``<page>-full.png``, for humans to look at.

Chromium comes from Debian (``apt-get install chromium chromium-driver``); the
session installs it when it is missing and apt-get can run, and skips otherwise.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _colab_template() -> str:
    """``https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/{}.ipynb``, from _config.yml."""
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner_repo = repository["url"].rstrip("/").removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{repository.get('branch', 'main')}/{{}}.ipynb"


COLAB = _colab_template()   # the repository's address is written once, in _config.yml
MATH_PAGES = ("book/01_individual_kd", "book/02_relational_kd")
BUILD_TIMEOUT_S = 1800


def toc_pages() -> list[str]:
    """Every page of ``_toc.yml`` (root first), as names like ``book/01_individual_kd``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part.get("chapters", [])]
    return [str(Path(p).with_suffix("")) if Path(p).suffix in (".md", ".ipynb") else p for p in pages]


def is_notebook(page: str) -> bool:
    return (ROOT / f"{page}.ipynb").exists()


def shot_name(page: str) -> str:
    return Path(page).name


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def build() -> dict:
    """Build the site once per session; returns ``{"returncode", "log", "skipped"}``."""
    if os.environ.get("RKD_SITE_BUILT") == "1" and (HTML / "index.html").exists():
        return {"returncode": 0, "log": "", "skipped": True}
    jb = Path(sys.executable).with_name("jupyter-book")
    command = [str(jb)] if jb.exists() else [shutil.which("jupyter-book") or "jupyter-book"]
    command += ["build", ".", "-W", "--keep-going"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except FileNotFoundError:
        pytest.skip("jupyter-book is not installed (pip install -r requirements.txt)")
    log = result.stdout + result.stderr
    if not (HTML / "index.html").exists():
        pytest.fail(f"jupyter-book produced no _build/html/index.html (exit {result.returncode}):\n{log[-5000:]}")
    return {"returncode": result.returncode, "log": log, "skipped": False}


def _install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver; returns why not, or None on success."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "apt-get is not available to install it"
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            return "installing it needs root (or sudo)"
        sudo = ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = sudo + [apt, "install", "-y", "-q", "chromium", "chromium-driver"]
    for attempt in range(2):
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1200)
        if result.returncode == 0 and CHROMIUM.exists() and CHROMEDRIVER.exists():
            return None
        if attempt == 0:   # stale package lists are the usual cause
            subprocess.run(sudo + [apt, "update", "-q"], capture_output=True, text=True, env=env, timeout=600)
    return f"apt-get install chromium chromium-driver failed:\n{(result.stdout + result.stderr)[-2000:]}"


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium driven by Selenium, with console logging on."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        why = _install_chromium()
        if why is not None:
            pytest.skip(f"headless Chromium is needed at {CHROMIUM} and {CHROMEDRIVER}: {why}")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1280,900", "--hide-scrollbars",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):   # keep pytest's output clean
        pass


@pytest.fixture(scope="session")
def server(build):
    """``_build/html`` served on 127.0.0.1 (a free port) from a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# ----------------------------------------------------------------------------- helpers

def _wait(driver, condition, timeout: float = 30.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _open(driver, url: str) -> None:
    driver.get_log("browser")   # drop messages of earlier pages
    driver.get(url)
    _wait(driver, lambda: driver.execute_script("return document.readyState") == "complete", what=f"{url} to load")


def _load_all_images(driver) -> list[dict]:
    """Make every image load now (lazy ones too) and return those that failed."""
    driver.execute_script("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });")
    _wait(driver, lambda: driver.execute_script(
        "return Array.from(document.images).every(i => i.complete);"), what="images to finish loading")
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.naturalWidth > 0))"
        ".map(i => ({src: i.currentSrc || i.src, alt: i.alt}));")


def _screenshots(driver, page: str) -> None:
    """``<page>.png``: the first screen; ``<page>-full.png``: the whole page (up to 30000 px)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0);")
    driver.save_screenshot(str(SHOTS / f"{shot_name(page)}.png"))
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    try:   # a window as tall as the page renders the page's real layout
        full = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 30000);")
        driver.set_window_size(width, full + 100)
        driver.save_screenshot(str(SHOTS / f"{shot_name(page)}-full.png"))
    except Exception:   # a screenshot is a convenience; never fail the test for it
        pass
    finally:
        driver.set_window_size(width, height)


#: Console errors that are known, harmless and not ours: sphinx-thebe 0.3 adds its
#: configuration script twice under Sphinx 7 (``const THEBE_JS_URL`` declared twice);
#: the book never starts thebe (no thebe launch button), so nothing depends on it.
KNOWN_CONSOLE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)


def _local_errors(driver, base: str) -> list[str]:
    """SEVERE console messages about the local site (404s, script errors), less the known ones."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE" and base in entry.get("message", "")
            and not any(known in entry["message"] for known in KNOWN_CONSOLE_ERRORS)]


# ----------------------------------------------------------------------------- tests

def test_build_has_no_warnings(build):
    """``jupyter-book build . -W --keep-going`` succeeds: no warning anywhere in the book."""
    if build["skipped"]:
        pytest.skip("RKD_SITE_BUILT=1: using the existing _build/html")
    warnings = [line for line in build["log"].splitlines() if "WARNING" in line or "ERROR" in line]
    assert build["returncode"] == 0, "the book build has warnings or errors:\n" + "\n".join(warnings[:50])


def test_index_redirects_to_intro(browser, server):
    _open(browser, f"{server}/index.html")
    _wait(browser, lambda: browser.current_url.endswith("/book/intro.html"), what="the redirect to book/intro.html")
    assert browser.find_elements("css selector", "h1"), "the intro page has no heading"


@pytest.mark.parametrize("page", toc_pages())
def test_page(browser, server, page):
    html = HTML / f"{page}.html"
    assert html.exists(), f"{page} is in _toc.yml but the build produced no {html.relative_to(ROOT)}"
    _open(browser, f"{server}/{page}.html")

    # the page and its title
    title = browser.title.strip()
    headings = [h.text.strip() for h in browser.find_elements("css selector", "article h1, main h1")]
    headings = [h for h in headings if h]      # the theme has hidden, empty ones
    assert title, f"{page}: empty <title>"
    assert headings and headings[0], f"{page}: no <h1> heading"
    assert headings[0].rstrip("#¶").strip() in title, f"{page}: <title> {title!r} does not name the page {headings[0]!r}"

    # every image loads
    broken = _load_all_images(browser)
    assert not broken, f"{page}: images that did not load: {broken}"

    # the Colab link on notebook pages
    if is_notebook(page):
        url = COLAB.format(page)
        links = browser.execute_script(
            "return Array.from(document.querySelectorAll('a')).map(a => a.href).filter(h => h === arguments[0]);", url)
        assert links, f"{page}: no link to {url}"

    # math: rendered by MathJax, without errors
    has_math = bool(browser.find_elements("css selector", ".math, .MathJax, mjx-container"))
    if page in MATH_PAGES:
        assert has_math, f"{page}: no math marked up for MathJax"
    if has_math:
        _wait(browser, lambda: browser.execute_script(
            "return document.querySelectorAll('mjx-container').length > 0;"), what=f"MathJax to render {page}")
        errors = browser.execute_script(
            "return Array.from(document.querySelectorAll('mjx-merror')).map(e => e.getAttribute('data-mjx-error') || e.textContent);")
        assert not errors, f"{page}: MathJax could not render: {errors}"

    _screenshots(browser, page)
    errors = _local_errors(browser, server)
    assert not errors, f"{page}: console errors: {errors}"
