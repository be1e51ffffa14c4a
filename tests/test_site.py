"""The built book, checked in a real browser (headless Chromium through Selenium).

The session builds the site once (``jupyter-book build . -W --keep-going`` into
``_build/html``; set ``RKD_SITE_BUILT=1`` to reuse an existing build), serves it on
127.0.0.1, opens the index and every page of ``_toc.yml`` once in a 1280-px-wide
window, and checks what a reader would see. One test per page and per kind of
problem, each listing everything it finds on that page, with where it is (the
section, and the first line of the code cell), so that an author can fix it:

* ``test_page``: the page loads and has its title, every image loads (the build is
  offline: a remote image shows up here), notebook pages link to their notebook in
  Colab, chapters 1 and 2 have MathJax, and MathJax reports no error;
* ``test_no_console_errors``: no SEVERE entry in the browser's console (script
  errors, failed requests), no request that the server answered with an error, and
  a favicon that loads (without one, browsers ask for a missing ``/favicon.ico``);
* ``test_no_raw_markdown``: no pipe table (``| a | b |`` then ``|---|``) and no
  ``$...$`` maths left as plain text outside code: Markdown that was not rendered;
* ``test_computed_tables_render``: every table that a code cell displays as Markdown
  (``text/markdown`` output) is an HTML ``<table>`` on the page;
* ``test_images_have_alt_text``: every image has an alt text that describes it, not an
  empty one or a file name (``_images/3f2a....png``); a figure's alt text comes from
  its cell's metadata, ``{"mystnb": {"image": {"alt": "..."}}}``;
* ``test_code_fits_the_column``: no line of shown code (cell inputs, code blocks,
  solutions included) is wider than the content column, which would give it a
  horizontal scroll bar;
* ``test_no_false_mailto_links``: no ``mailto:`` link that is not an e-mail address
  (reStructuredText links ``Recall@1``).

Chapter 2's explorable figure (``book/_static/rkd_explorable.js``) is checked in the
page: its losses equal the package's for its initial and for random configurations,
and dragging a point (mouse) or moving it (keyboard) changes the shown losses to the
package's values for the new coordinates; Reset restores the start.

A screenshot of every page (first screen) lands in ``_build/screenshots/<page>.png``
and a full-length one in ``<page>-full.png``, for humans to look at.

Chromium comes from Debian (``apt-get install chromium chromium-driver``); the
session installs it when it is missing and apt-get can run, and skips otherwise.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
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
WIDTH, HEIGHT = 1280, 900     # the window the pages are checked in


def _colab_template() -> str:
    """``https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/{}.ipynb``, from _config.yml."""
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner_repo = repository["url"].rstrip("/").removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{repository.get('branch', 'main')}/{{}}.ipynb"


COLAB = _colab_template()   # the repository's address is written once, in _config.yml
MATH_PAGES = ("book/01_individual_kd", "book/02_relational_kd")
EXPLORABLE_PAGE = "book/02_relational_kd"
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


# ----------------------------------------------------------------------------- computed tables

SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def normalise_header(cells) -> str:
    """A table's header as ``a|b|c``: lower case, letters and digits only (markup and dashes gone)."""
    return "|".join(re.sub(r"[^0-9a-z]+", "", cell.lower()) for cell in cells)


def markdown_tables(text: str) -> list[list[str]]:
    """The header cells of every pipe table in a piece of Markdown."""
    lines = text.splitlines()
    headers = []
    for i in range(1, len(lines)):
        if SEPARATOR.match(lines[i]) and "|" in lines[i - 1]:
            headers.append([c.strip() for c in lines[i - 1].strip().strip("|").split("|")])
    return headers


def computed_tables(page: str) -> list[dict]:
    """Pipe tables in the ``text/markdown`` outputs of a notebook's code cells: header and cell."""
    path = ROOT / f"{page}.ipynb"
    if not path.exists():
        return []
    found = []
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        first_line = next((line.strip() for line in "".join(cell["source"]).splitlines() if line.strip()), "")
        for output in cell.get("outputs", []):
            markdown = output.get("data", {}).get("text/markdown")
            if markdown is None:
                continue
            for header in markdown_tables("".join(markdown)):
                found.append({"header": header, "cell": index, "first_line": first_line})
    return found


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
                "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``_build/html`` quietly and remembers every request it answered with an error."""

    def log_message(self, *args):   # keep pytest's output clean
        pass

    def log_request(self, code="-", size="-"):
        status = getattr(code, "value", code)
        if isinstance(status, int) and status >= 400:
            self.server.failed.append(f"{status} {self.path}")


class Site:
    def __init__(self, url: str, failed: list[str]):
        self.url, self.failed = url, failed


@pytest.fixture(scope="session")
def server(build):
    """``_build/html`` served on 127.0.0.1 (a free port) from a thread."""
    handler = functools.partial(_Handler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.failed = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Site(f"http://127.0.0.1:{httpd.server_address[1]}", httpd.failed)
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


def _mathjax_done(driver) -> None:
    """Wait until MathJax (if the page loads it) has typeset everything."""
    driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const start = Date.now();
        (function poll() {
          const mj = window.MathJax;
          if (mj && mj.startup && mj.startup.promise) { mj.startup.promise.then(() => done(true), () => done(false)); }
          else if (!document.querySelector('script[src*="mathjax"]') || Date.now() - start > 30000) { done(false); }
          else { setTimeout(poll, 100); }
        })();""")


def _screenshots(driver, page: str) -> None:
    """``<page>.png``: the first screen; ``<page>-full.png``: the whole page (up to 30000 px)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0);")
    driver.save_screenshot(str(SHOTS / f"{shot_name(page)}.png"))
    try:   # a window as tall as the page renders the page's real layout
        full = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 30000);")
        driver.set_window_size(WIDTH, full + 100)
        driver.save_screenshot(str(SHOTS / f"{shot_name(page)}-full.png"))
    except Exception:   # a screenshot is a convenience; never fail the test for it
        pass
    finally:
        driver.set_window_size(WIDTH, HEIGHT)


#: Everything the reader-facing checks need from one page, collected by one script.
#: Text is read from text nodes outside code (pre, code), maths already typeset by
#: MathJax, scripts and the explorable figure; the location of a problem is the
#: nearest section heading and, inside a notebook cell, the cell's first line.
_INSPECT = r"""
const article = document.querySelector('article') || document.body;
const headings = Array.from(article.querySelectorAll('h1, h2, h3, h4'));
const where = (el) => {   // the last heading before el, the admonition and the code cell around it
  let heading = null;
  for (const h of headings) {
    if (h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING) heading = h; else break;
  }
  let text = `section "${heading ? heading.textContent.replace(/[#¶]/g, '').trim() : '(top of the page)'}"`;
  const box = el.closest('.admonition');
  const boxTitle = box && box.querySelector('.admonition-title');
  if (boxTitle) text += `, in "${boxTitle.textContent.replace(/\s+/g, ' ').trim().slice(0, 60)}"`;
  const cell = el.closest('div.cell');
  const input = cell && cell.querySelector('.cell_input pre');
  const first = input ? input.textContent.split('\n').find(l => l.trim()) || '' : '';
  return cell ? `${text}, code cell "${first.trim().slice(0, 70)}"` : text;
};
const SKIP = 'pre, code, script, style, mjx-container, mjx-assistive-mml, svg, textarea, .rkd-explorable, .MathJax';
const BLOCK = 'p, li, dd, dt, td, th, h1, h2, h3, h4, h5, h6, figcaption, blockquote, div';
const blocks = new Map();
const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const parent = node.parentElement;
  if (!parent || parent.closest(SKIP)) continue;
  const block = parent.closest(BLOCK) || article;
  blocks.set(block, (blocks.get(block) || '') + node.textContent);
}
const rawTables = [], rawMath = [];
const tableRe = /\|[^|\n]*\|[^\n]*\n?\s*\|\s*:?[-\u2013\u2014]+:?\s*\|/;
const mathRe = /\$\$[^$]+\$\$|(?<![\\$\w])\$(?=\S)[^$\n]{1,300}?(?<=\S)\$(?![\w$])/g;
for (const [block, text] of blocks) {
  const t = tableRe.exec(text);
  if (t) rawTables.push(`${where(block)}: "${text.slice(t.index, t.index + 90).replace(/\s+/g, ' ').trim()}..."`);
  for (const m of text.matchAll(mathRe)) rawMath.push(`${where(block)}: ${m[0].replace(/\s+/g, ' ').slice(0, 90)}`);
}
const tables = Array.from(article.querySelectorAll('table')).map(table => {
  const row = table.querySelector('thead tr') || table.querySelector('tr');
  return row ? Array.from(row.children).map(c => c.textContent.trim()) : [];
});
const fileLike = (alt, src) => /\.(png|jpe?g|gif|svg|webp|bmp|pdf)(\?.*)?$/i.test(alt)
  || (/^\S+$/.test(alt) && /[\/\\]/.test(alt)) || alt === src.split('/').pop();
const images = [];
for (const img of document.images) {
  const alt = (img.getAttribute('alt') || '').trim();
  const src = img.getAttribute('src') || '';
  const name = src.startsWith('data:') ? 'an inline image' : src.split('/').pop();
  if (!alt) images.push(`${name} (${where(img)}): no alt text`);
  else if (fileLike(alt, src)) images.push(`${name} (${where(img)}): alt text is a file name, "${alt}"`);
}
// expand collapsed solutions and <details>, so that their code is measured too
article.querySelectorAll('details').forEach(d => { d.open = true; });
article.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
const canvas = document.createElement('canvas').getContext('2d');
const wide = [];
for (const pre of article.querySelectorAll('pre')) {
  if (pre.closest('.rkd-explorable') || !(pre.clientWidth > 0) || pre.scrollWidth <= pre.clientWidth + 1) continue;
  const style = getComputedStyle(pre);
  canvas.font = style.font;
  const room = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const capacity = Math.floor(room / canvas.measureText('0').width);
  const lines = pre.textContent.replace(/\n$/, '').split('\n');
  const over = [];
  lines.forEach((line, i) => {
    if (canvas.measureText(line).width > room + 0.5) over.push(`line ${i + 1}, ${line.length} characters: ${line.trim().slice(0, 70)}`);
  });
  const kind = pre.closest('.cell_input') ? 'cell input' : pre.closest('.cell_output, .output') ? 'cell output' : 'code block';
  const label = pre.closest('div.cell') ? where(pre) : `${where(pre)}, ${kind} "${(lines.find(l => l.trim()) || '').trim().slice(0, 60)}"`;
  wide.push(`${label} (${kind}; the column holds ${capacity} characters):\n      ` +
            (over.length ? over.join('\n      ') : `scrolls (${pre.scrollWidth} px of text in ${pre.clientWidth} px)`));
}
const emails = Array.from(document.querySelectorAll('a[href^="mailto:"]'))
  .map(a => { const h = a.getAttribute('href').slice(7); try { return decodeURIComponent(h); } catch (e) { return h; } })
  .filter(address => !/^[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}$/.test(address));
return {rawTables, rawMath, tables, images, wide, emails, width: window.innerWidth};
"""


class Pages:
    """Opens each page once and keeps what the page-level tests check."""

    def __init__(self, driver, site: Site):
        self.driver, self.site, self.reports = driver, site, {}

    def __call__(self, page: str) -> dict:
        if page not in self.reports:
            self.reports[page] = self._visit(page)
        return self.reports[page]

    def _visit(self, page: str) -> dict:
        driver = self.driver
        html = HTML / f"{page}.html"
        assert html.exists(), f"{page} is in _toc.yml but the build produced no {html.relative_to(ROOT)}"
        driver.set_window_size(WIDTH, HEIGHT)
        if driver.current_url.startswith(self.site.url):   # every page as on a first visit
            driver.execute_script("localStorage.clear(); sessionStorage.clear();")
        del self.site.failed[:]
        _open(driver, f"{self.site.url}/{page}.html")
        report = {
            "title": driver.title.strip(),
            "headings": [h for h in (e.text.strip() for e in driver.find_elements(
                "css selector", "article h1, main h1")) if h],      # the theme has hidden, empty ones
            "broken_images": _load_all_images(driver),
            "colab_links": driver.execute_script(
                "return Array.from(document.querySelectorAll('a')).map(a => a.href).filter(h => h === arguments[0]);",
                COLAB.format(page)),
            "has_math": bool(driver.find_elements("css selector", ".math, .MathJax, mjx-container")),
        }
        _mathjax_done(driver)
        report["typeset"] = bool(driver.find_elements("css selector", "mjx-container"))
        report["math_errors"] = driver.execute_script(
            "return Array.from(document.querySelectorAll('mjx-merror'))"
            ".map(e => e.getAttribute('data-mjx-error') || e.textContent);")
        _screenshots(driver, page)
        report.update(driver.execute_script(_INSPECT))
        report["favicon"] = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const link = document.querySelector('link[rel~="icon"]');
            if (!link) { done('none'); return; }
            fetch(link.href).then(r => done(r.ok ? 'ok' : `${r.status} ${link.getAttribute('href')}`),
                                  e => done(`failed: ${link.getAttribute('href')}`));""")
        time.sleep(0.5)   # late requests and console messages
        report["console"] = [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        report["failed_requests"] = list(self.site.failed)
        return report


@pytest.fixture(scope="session")
def pages(browser, server) -> Pages:
    return Pages(browser, server)


def _problems(page: str, what: str, items: list[str]) -> str:
    return f"{page}: {len(items)} {what}:\n  - " + "\n  - ".join(items)


# ----------------------------------------------------------------------------- tests

def test_build_has_no_warnings(build):
    """``jupyter-book build . -W --keep-going`` succeeds: no warning anywhere in the book."""
    if build["skipped"]:
        pytest.skip("RKD_SITE_BUILT=1: using the existing _build/html")
    warnings = [line for line in build["log"].splitlines() if "WARNING" in line or "ERROR" in line]
    assert build["returncode"] == 0, "the book build has warnings or errors:\n" + "\n".join(warnings[:50])


def test_index_redirects_to_intro(browser, server):
    _open(browser, f"{server.url}/index.html")
    _wait(browser, lambda: browser.current_url.endswith("/book/intro.html"), what="the redirect to book/intro.html")
    assert browser.find_elements("css selector", "h1"), "the intro page has no heading"


@pytest.mark.parametrize("page", toc_pages())
def test_page(pages, page):
    """The page, its title, its images, its Colab link and its maths."""
    report = pages(page)
    title, headings = report["title"], report["headings"]
    assert title, f"{page}: empty <title>"
    assert headings and headings[0], f"{page}: no <h1> heading"
    assert headings[0].rstrip("#¶").strip() in title, f"{page}: <title> {title!r} does not name the page {headings[0]!r}"
    assert not report["broken_images"], f"{page}: images that did not load: {report['broken_images']}"
    if is_notebook(page):
        assert report["colab_links"], f"{page}: no link to {COLAB.format(page)}"
    if page in MATH_PAGES:
        assert report["has_math"], f"{page}: no math marked up for MathJax"
    if report["has_math"]:
        assert report["typeset"], f"{page}: MathJax rendered nothing"
        assert not report["math_errors"], f"{page}: MathJax could not render: {report['math_errors']}"


@pytest.mark.parametrize("page", toc_pages())
def test_no_console_errors(pages, page):
    """Nothing in the browser's console at level SEVERE, and no request answered with an error."""
    report = pages(page)
    problems = [f"console: {m}" for m in report["console"]] + [f"request: {r}" for r in report["failed_requests"]]
    if report["favicon"] == "none":
        problems.append("no <link rel=\"icon\">: browsers then ask for /favicon.ico, which is missing (html.favicon)")
    elif report["favicon"] != "ok":
        problems.append(f"the favicon does not load: {report['favicon']}")
    assert not problems, _problems(page, "console errors or failed requests", problems)


@pytest.mark.parametrize("page", toc_pages())
def test_no_raw_markdown(pages, page):
    """No pipe table and no ``$...$`` maths left as plain text (outside code)."""
    report = pages(page)
    problems = [f"raw pipe table in {t}" for t in report["rawTables"]]
    problems += [f"unrendered maths in {m}" for m in report["rawMath"]]
    assert not problems, _problems(page, "pieces of Markdown shown as plain text", problems)


@pytest.mark.parametrize("page", toc_pages())
def test_computed_tables_render(pages, page):
    """Each pipe table in a code cell's ``text/markdown`` output is an HTML table on the page."""
    expected = computed_tables(page)
    if not expected:
        pytest.skip(f"{page} displays no computed table")
    shown = {normalise_header(cells) for cells in pages(page)["tables"]}
    missing = [f"the table with columns {table['header']} (output of code cell {table['cell']}, "
               f"\"{table['first_line'][:60]}\") is not rendered as a <table>"
               for table in expected if normalise_header(table["header"]) not in shown]
    assert not missing, _problems(page, "computed tables not rendered", missing)


@pytest.mark.parametrize("page", toc_pages())
def test_images_have_alt_text(pages, page):
    """Every image has an alt text that describes it (not empty, not a file name)."""
    problems = pages(page)["images"]
    assert not problems, _problems(page, "images without a meaningful alt text "
                                   "(set it in the cell's metadata: {\"mystnb\": {\"image\": {\"alt\": ...}}})", problems)


@pytest.mark.parametrize("page", toc_pages())
def test_code_fits_the_column(pages, page):
    """No shown code is wider than the content column at a 1280-px-wide window (no horizontal scroll bar)."""
    report = pages(page)
    assert report["width"] >= WIDTH - 20, f"the window is {report['width']} px wide, not {WIDTH}"
    assert not report["wide"], _problems(page, "code blocks wider than the column", report["wide"])


@pytest.mark.parametrize("page", toc_pages())
def test_no_false_mailto_links(pages, page):
    """No ``mailto:`` link to something that is not an e-mail address (such as ``Recall@1``)."""
    emails = pages(page)["emails"]
    assert not emails, _problems(page, "mailto: links that are not e-mail addresses", emails)


# ----------------------------------------------------------------------------- chapter 2's explorable figure

def _package_losses(student, teacher) -> tuple[float, float]:
    import torch

    from rkd_tutorial.losses import rkd_angle_loss, rkd_distance_loss

    s, t = torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64)
    return rkd_distance_loss(s, t).item(), rkd_angle_loss(s, t).item()


def _close(a: float, b: float, rtol: float = 1e-9) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) or max(abs(a), abs(b)) < 1e-15


def _explorable(browser, server):
    """Open chapter 2 and return the figure's root element, once its script has drawn it."""
    _open(browser, f"{server.url}/{EXPLORABLE_PAGE}.html")
    _wait(browser, lambda: browser.execute_script(
        "return !!(window.rkdExplorable && document.querySelector('.rkd-explorable.rkd-ready'));"),
        what="the explorable figure to start")
    root = browser.find_element("css selector", ".rkd-explorable")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});",
                           root.find_element("css selector", ".rkd-panel-student"))
    return root


def _shown(root) -> dict:
    """What the figure shows and exposes: coordinates, exact losses, displayed losses."""
    return {
        "student": json.loads(root.get_attribute("data-student")),
        "teacher": json.loads(root.get_attribute("data-teacher")),
        "rkdD": float(root.get_attribute("data-rkd-d")),
        "rkdA": float(root.get_attribute("data-rkd-a")),
        "textD": root.find_element("css selector", ".rkd-loss-d").text.strip(),
        "textA": root.find_element("css selector", ".rkd-loss-a").text.strip(),
    }


def _check_against_package(state: dict, what: str) -> None:
    d, a = _package_losses(state["student"], state["teacher"])
    assert _close(state["rkdD"], d), f"{what}: the figure's RKD-D is {state['rkdD']!r}, the package's {d!r}"
    assert _close(state["rkdA"], a), f"{what}: the figure's RKD-A is {state['rkdA']!r}, the package's {a!r}"
    for label, text, exact in (("RKD-D", state["textD"], d), ("RKD-A", state["textA"], a)):
        shown = float(text)   # four significant digits
        assert abs(shown - exact) <= 5e-4 * abs(exact) + 1e-12, f"{what}: {label} shown as {text}, the package's is {exact!r}"


def test_explorable_matches_package(browser, server):
    """The figure's losses, for its initial and for random student configurations, are the package's."""
    import numpy as np

    root = _explorable(browser, server)
    state = _shown(root)
    assert len(state["student"]) == len(state["teacher"]) >= 5
    _check_against_package(state, "initial configuration")
    assert state["rkdD"] > 1e-3 and state["rkdA"] > 1e-3, "the student should not start as a copy of the teacher"

    rng = np.random.default_rng(7)
    for k in range(4):
        points = rng.uniform(-2, 2, (len(state["teacher"]), 2)).tolist()
        api_state = browser.execute_script("return window.rkdExplorable.setStudent(arguments[0]);", points)
        shown = _shown(root)
        assert shown["student"] == points and api_state["student"] == points
        assert api_state["rkdD"] == shown["rkdD"] and api_state["rkdA"] == shown["rkdA"]
        _check_against_package(shown, f"random configuration {k}")
    # and for random teachers too, through the figure's own functions
    for k in range(3):
        student, teacher = rng.normal(size=(6, 2)).tolist(), rng.normal(size=(6, 3)).tolist()
        result = browser.execute_script(
            "const r = window.rkdExplorable.compute(arguments[0], arguments[1]); return [r.rkdD, r.rkdA];",
            student, teacher)
        d, a = _package_losses(student, teacher)
        assert _close(result[0], d) and _close(result[1], a), (k, result, d, a)

    browser.find_element("css selector", ".rkd-explorable .rkd-reset").click()
    assert _shown(root)["student"] == state["student"], "Reset does not restore the initial student"


def test_explorable_drag_and_keys(browser, server):
    """Dragging a student point with the mouse, and moving it with the keyboard, update the losses."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.keys import Keys

    root = _explorable(browser, server)
    before = _shown(root)
    point = root.find_elements("css selector", ".rkd-panel-student .rkd-point")[2]
    x, y = browser.execute_script(   # the point's centre, in the window's coordinates
        "const r = arguments[0].querySelector('.rkd-dot').getBoundingClientRect();"
        "return [Math.round(r.left + r.width / 2), Math.round(r.top + r.height / 2)];", point)
    drag = ActionBuilder(browser)
    drag.pointer_action.move_to_location(x, y).pointer_down().move_to_location(x + 15, y - 10) \
        .move_to_location(x + 40, y - 30).pointer_up()
    drag.perform()
    after = _shown(root)
    moved = [i for i, (p, q) in enumerate(zip(before["student"], after["student"])) if p != q]
    assert moved == [2], f"dragging point 3 moved points {[i + 1 for i in moved]}"
    dx = after["student"][2][0] - before["student"][2][0]
    dy = after["student"][2][1] - before["student"][2][1]
    assert dx > 0.3 and dy > 0.2, f"a drag of 40 px right and 30 px up moved the point by ({dx:.3f}, {dy:.3f})"
    assert after["textD"] != before["textD"] and after["textA"] != before["textA"], \
        f"the shown losses did not change: {before['textD']} / {before['textA']}"
    assert after["teacher"] == before["teacher"]
    _check_against_package(after, "after dragging point 3")

    point = root.find_elements("css selector", ".rkd-panel-student .rkd-point")[0]
    browser.execute_script("arguments[0].focus();", point)
    point.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_UP)
    keyed = _shown(root)
    x0, y0 = after["student"][0]
    x1, y1 = keyed["student"][0]
    assert abs(x1 - x0 - 0.1) < 1e-9 and abs(y1 - y0 - 0.05) < 1e-9, (after["student"][0], keyed["student"][0])
    _check_against_package(keyed, "after moving point 1 with the arrow keys")

    root.find_element("css selector", ".rkd-reset").click()
    assert _shown(root)["student"] == before["student"], "Reset does not restore the initial student"
    assert not [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
