"""Sphinx extension: two fixes for what a reader of the built site would otherwise see.

1. **Inline scripts written twice.** Sphinx 7.x (before 8.2, sphinx-doc/sphinx#13402)
   writes an inline script that an extension registers after the builder started
   (``app.add_js_file(None, body=...)``) twice into every page: once as the builder
   got it (``filename=None``) and once re-read from the registry (``filename=''``),
   which do not compare equal. sphinx-thebe registers
   ``const THEBE_JS_URL = ...`` that way, so every page logged
   ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` in the
   browser console (sphinx-togglebutton's ``var togglebuttonSelector`` was doubled
   too, silently). This extension drops the second copy of any script with the
   same source, body, attributes and priority before the page is written.
   sphinx-thebe itself stays loaded: jupyter-book always adds it, and the launch
   buttons (Colab) do not depend on it either way.

2. **Words with an ``@`` turned into ``mailto:`` links.** reStructuredText, which
   autodoc uses for the package's docstrings (``book/api.md``), links every
   standalone ``user@host`` as an e-mail address, so ``Recall@1/2/4/8`` became
   ``mailto:Recall@1/2/4/8``. References to ``mailto:`` whose address has no
   domain with a dot and a top-level name (``example.org``) go back to plain text.

Registered in ``_config.yml`` under ``sphinx.local_extensions`` (``site_fixes: book/_ext``).
"""

from __future__ import annotations

import re

from docutils import nodes

#: A real e-mail address: something@name.tld, nothing else (no "/" or the like).
EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}$")


def _script_key(js) -> tuple:
    filename = getattr(js, "filename", js) or ""
    attributes = getattr(js, "attributes", {}) or {}
    return (str(filename), getattr(js, "priority", 500), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of several identical ``<script>`` entries of the page."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple] = set()
    unique = []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def unlink_false_emails(app, doctree) -> None:
    """Turn ``mailto:`` references to things that are not e-mail addresses back into text."""
    for ref in list(doctree.findall(nodes.reference)):
        uri = ref.get("refuri", "")
        if uri.startswith("mailto:") and not EMAIL.match(uri[len("mailto:"):]):
            ref.replace_self(nodes.Text(ref.astext()))


def setup(app):
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)   # after the others added theirs
    app.connect("doctree-read", unlink_false_emails)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
