"""book/_ext/site_fixes.py on a tiny Sphinx project (seconds; the full book is checked in tests/test_site.py).

* An inline script that an extension registers after the builder started (as
  sphinx-thebe does with ``const THEBE_JS_URL = ...``) is written once, not twice.
* reStructuredText's ``Recall@1/2/4/8`` is text, not a ``mailto:`` link; a real
  address still is one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

LATE_SCRIPT = '''
def add_late_script(app, env, docnames):
    app.add_js_file(None, body="const LATE_SCRIPT_MARKER = 1;")

def setup(app):
    app.connect("env-before-read-docs", add_late_script)   # what sphinx-thebe does
    return {"parallel_read_safe": True}
'''


def test_config_loads_the_extension():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"].get("site_fixes") == "book/_ext"
    assert (ROOT / "book" / "_ext" / "site_fixes.py").exists()


def test_late_scripts_once_and_no_false_mailto(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "late_script.py").write_text(LATE_SCRIPT)
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\nsys.path.insert(0, {str(source)!r})\n"
        "extensions = ['late_script', 'site_fixes']\n")
    (source / "index.rst").write_text(
        "Title\n=====\n\nRecall@1/2/4/8 of the model, keyed 'recall@k'. Write to someone@example.org.\n")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "-b", "html", str(source), str(tmp_path / "html")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "html" / "index.html").read_text()
    assert html.count("LATE_SCRIPT_MARKER") == 1, "the late inline script is written more than once"
    assert "mailto:Recall" not in html and "mailto:recall" not in html
    assert "Recall&#64;1/2/4/8" in html or "Recall@1/2/4/8" in html
    assert "mailto:" in html, "a real e-mail address should stay a link"
