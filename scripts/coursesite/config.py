"""Where the course lives and where it is published: the repository's paths and ``_config.yml``.

`site_url` is the one address the set-up cells install from and the plain notebooks link to.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "jupyter_execute"
SITE = ROOT / "_build" / "site"


def load_config(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "_config.yml").read_text())


def published_repository(config: dict) -> tuple[str, str, str] | None:
    """``(owner, repo, branch)`` of the public GitHub repository that holds the published bundle.

    The one setting is ``repository: {url, branch}`` in ``_config.yml``; an empty ``url`` means
    the course is not published (no launch buttons, no download address in the set-up cell).
    """
    repo = config.get("repository") or {}
    url = (repo.get("url") or "").strip().rstrip("/")
    if not url:
        return None
    m = re.fullmatch(r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?", url)
    if not m:
        raise ValueError(f"repository.url must be https://github.com/<owner>/<repo>, not {url!r}")
    return m.group(1), m.group(2), (repo.get("branch") or "gh-pages").strip()


def site_url(config: dict) -> str:
    """The course site's public address ('' when unpublished): where the bundle is served.

    ``html: baseurl`` in ``_config.yml`` (Sphinx's ``html_baseurl``) when set: a course served
    from its own web server or a university site; else the GitHub Pages address of
    ``repository: url`` (``https://<owner>.github.io/<repo>``). The set-up cell installs from
    ``<site>/student/``; a student can override the address (``GMMCOURSE_SITE``).
    """
    base = str((config.get("html") or {}).get("baseurl") or "").strip().rstrip("/")
    if base:
        if not re.fullmatch(r"https?://[^\s\"'<>]+", base):
            raise ValueError(f"html.baseurl must be an http(s) address, not {base!r}")
        return base
    pub = published_repository(config)
    if pub is None:
        return ""
    owner, repo, _ = pub
    return f"https://{owner.lower()}.github.io/{repo}"
