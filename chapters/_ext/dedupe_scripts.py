"""Drop duplicate <script> entries from each page.

sphinx-thebe registers its inline configuration script (``const THEBE_JS_URL = ...``) every
time its event fires, and in a Jupyter Book build it fires twice, so every page declared the
same ``const`` twice and the browser logged "Identifier 'THEBE_JS_URL' has already been
declared". Keeping the first copy of each identical script fixes that.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # an inline script may be registered with filename None or "": treat both alike
        key = (getattr(js, "filename", None) or "", repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
