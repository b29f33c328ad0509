"""The page's download menu offers what runs: the notebook (.ipynb), never the MyST source (.md).

sphinx-book-theme's download menu lists the page's source file (``chapters/<page>.md``, which
imports ``myst_nb`` and cannot run as a notebook), then a ``.ipynb`` only where its own launch
buttons are on (the course turns those off, chapters/_ext/course_launch.py), and "print to PDF".
This extension copies each notebook page's executed notebook to ``_sources/<page>.ipynb`` (which
``make site`` replaces by the plain notebook with the set-up cell), offers it, and takes the
source file out of the menu. ``html_copy_source: false`` (``_config.yml``) keeps the ``.md``
files out of the published site too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SOURCE_BUTTON = "download-source-button"


def _offer_notebook(app, pagename, templatename, context, doctree):
    """Before the theme builds its menu: the page's notebook in ``_sources/``, named in the context."""
    if "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if executed.exists():
        target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(executed, target)
        context["ipynb_source"] = f"{pagename}.ipynb"


def _drop_source_button(app, pagename, templatename, context, doctree):
    """After the theme built its menu: the source file's entry removed."""
    for group in context.get("header_buttons") or []:
        if group.get("label") == "download-buttons":
            group["buttons"] = [b for b in group.get("buttons", []) if b.get("label") != SOURCE_BUTTON]


def setup(app):
    app.connect("html-page-context", _offer_notebook, priority=499)       # the theme's menu: 501
    app.connect("html-page-context", _drop_source_button, priority=510)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
