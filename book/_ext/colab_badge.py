"""Sphinx extension: the "Open in Colab" badge from the book's own files on the built site.

Each chapter's first cell shows the standard badge image,
``https://colab.research.google.com/assets/colab-badge.svg``, so that the badge renders
wherever a reader opens the notebook: on GitHub, in Colab, in Jupyter. The built site
must not depend on another server for it (the book is built and browser-tested
offline), so at build time this extension points that one image at the local copy,
``colab_badge_local`` (default ``book/_static/colab-badge.svg``, relative to the
book's root). Sphinx then copies the file into ``_images/`` like any local image.
The badge's link, to the chapter in Colab, is left as it is.

Registered in ``_config.yml`` under ``sphinx.local_extensions`` (``colab_badge: book/_ext``).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform

REMOTE_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


class LocalColabBadge(SphinxTransform):
    """Rewrite the remote badge image's URI to the local copy, before Sphinx collects images."""

    default_priority = 100   # before any transform that looks at images

    def apply(self, **kwargs) -> None:
        local = "/" + str(self.config.colab_badge_local).lstrip("/")   # "/x": x relative to the source folder
        for image in self.document.findall(nodes.image):
            if image.get("uri") == REMOTE_BADGE:
                image["uri"] = local
                image.attributes.pop("candidates", None)


def setup(app):
    app.add_config_value("colab_badge_local", "book/_static/colab-badge.svg", "env")
    app.add_transform(LocalColabBadge)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
