"""Launch buttons that open the course's runnable notebooks, or no launch buttons at all.

sphinx-book-theme's own launch buttons open the page's *source* in the repository
(``chapters/<page>.md``), which Colab cannot open and which imports ``myst_nb``. The course
publishes plain notebooks instead (``make site`` → ``notebooks/chapters/<page>.ipynb`` in the
bundle, pushed to the branch named in ``_config.yml``), so this extension takes the theme's
``launch_buttons`` providers over and points them there:

* Colab:      ``{colab_url}/github/<owner>/<repo>/blob/<branch>/notebooks/<page>.ipynb``
* Binder:     ``{binderhub_url}/v2/gh/<owner>/<repo>/<branch>?urlpath=lab/tree/notebooks/<page>.ipynb``
* JupyterHub: nbgitpuller, ``{jupyterhub_url}/hub/user-redirect/git-pull?repo=...&branch=...&urlpath=...``

The one setting is ``repository: url`` (and ``branch``) in ``_config.yml``: the public GitHub
repository that holds the published bundle. When it is empty, the book shows no launch
buttons and no repository button (never a placeholder address).
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

_STATE: dict = {}


def _published(theme: dict):
    url = (theme.get("repository_url") or "").strip().rstrip("/")
    m = re.fullmatch(r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?", url)
    if not m:
        return None
    return m.group(1), m.group(2), (theme.get("repository_branch") or "gh-pages").strip()


def _config_inited(app, config):
    theme = config.html_theme_options
    _STATE["launch"] = dict(theme.get("launch_buttons") or {})
    theme["launch_buttons"] = {}  # the theme adds none of its own
    pub = _published(theme)
    _STATE["published"] = pub
    # What the buttons are made of, as a config value that rebuilds the HTML when it changes:
    # emptied above, the theme's own launch_buttons no longer tell Sphinx that they changed.
    config.course_launch_settings = repr((sorted(_STATE["launch"].items()), pub))
    if pub is None:
        url = (theme.get("repository_url") or "").strip()
        if url:
            from sphinx.util import logging

            logging.getLogger(__name__).warning(
                f"repository.url {url!r} is not https://github.com/<owner>/<repo>: no launch buttons")
        for key in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
            theme[key] = False
        theme["repository_url"] = ""
    else:
        theme["use_repository_button"] = True


def _is_notebook(app, pagename):
    return "kernelspec" in app.env.metadata.get(pagename, {})


def launch_urls(pagename: str, published, launch: dict) -> list[tuple[str, str]]:
    """``[(provider, url)]`` for one page of the book."""
    if published is None:
        return []
    owner, repo, branch = published
    path = f"notebooks/{pagename}.ipynb"
    ui = "lab/tree" if launch.get("notebook_interface", "jupyterlab") == "jupyterlab" else "tree"
    urls = []
    if launch.get("binderhub_url"):
        urls.append(("Binder", f"{launch['binderhub_url'].rstrip('/')}/v2/gh/{owner}/{repo}/{branch}?urlpath={ui}/{path}"))
    if launch.get("jupyterhub_url"):
        query = urlencode({"repo": f"https://github.com/{owner}/{repo}", "branch": branch,
                           "urlpath": f"{ui}/{repo}/{path}"}, safe="/")
        urls.append(("JupyterHub", f"{launch['jupyterhub_url'].rstrip('/')}/hub/user-redirect/git-pull?{query}"))
    if launch.get("colab_url"):
        urls.append(("Colab", f"{launch['colab_url'].rstrip('/')}/github/{owner}/{repo}/blob/{branch}/{path}"))
    return urls


_ICONS = {"Binder": "_static/images/logo_binder.svg", "JupyterHub": "_static/images/logo_jupyterhub.svg",
          "Colab": "_static/images/logo_colab.png"}


def _add_launch_buttons(app, pagename, templatename, context, doctree):
    if not _is_notebook(app, pagename) or "header_buttons" not in context:
        return
    urls = launch_urls(pagename, _STATE.get("published"), _STATE.get("launch", {}))
    if not urls:
        return
    context["header_buttons"].append({
        "type": "group",
        "tooltip": "Launch this chapter as a notebook",
        "icon": "fas fa-rocket",
        "label": "launch-buttons",
        "buttons": [{"type": "link", "text": name, "tooltip": f"Launch on {name}", "icon": _ICONS[name], "url": url}
                    for name, url in urls],
    })


def setup(app):
    app.add_config_value("course_launch_settings", "", "html")
    app.connect("config-inited", _config_inited, priority=900)  # after the theme's own config set-up
    app.connect("html-page-context", _add_launch_buttons, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
