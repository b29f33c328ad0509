"""What a sandboxed kernel may import: an allow-list turned into a file-system view.

An assignment offers distributions (``"numpy"``, ``"genjax"``) and course modules
(``"gmmcourse.gibbs"``). The sandbox then sees the venv's ``site-packages`` as an empty,
read-only directory into which only the files of the offered distributions, their
dependencies and the kernel's own (`KERNEL`) are bound, and ``gmmcourse/`` as a directory
holding only the offered modules' ``.py`` files and their own ``__pycache__`` entries. What is
not offered is absent, not blanked: no ``.pyc`` of a hidden module, no other distribution.
The kernel is the student's, so an import hook would not do; the view is the kernel's
whole file system.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata as md
import os
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["KERNEL", "closure", "site_entries", "course_modules", "course_entries", "distributions", "site_packages"]

KERNEL = ("ipykernel", "numpy")
"""What every kernel needs: Jupyter's kernel, and NumPy for the exports (`grading.kernel_side`)."""


def site_packages(venv: str) -> Path:
    return Path(venv) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@functools.lru_cache(maxsize=8)
def _dists(site: str) -> dict[str, Path]:
    """Canonical distribution name -> its ``.dist-info`` folder in `site`."""
    out = {}
    for e in os.scandir(site):
        if e.name.endswith(".dist-info") and e.is_dir():
            out[canonicalize_name(e.name[: -len(".dist-info")].split("-")[0])] = Path(e.path)
    return out


def _requires(info: Path) -> list[str]:
    return md.PathDistribution(info).requires or []


def closure(names, site: str) -> frozenset[str]:
    """The canonical names of `names` (with ``[extras]``) and everything they require
    (markers evaluated for this interpreter); an unknown name raises ValueError."""
    dists = _dists(site)
    out: set[str] = set()
    todo = [Requirement(n) for n in names]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        if name not in dists:
            raise ValueError(f"{req.name!r} is not installed in {site}")
        out.add(name)
        for r in _requires(dists[name]):
            sub = Requirement(r)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ({""} | set(req.extras))):
                todo.append(sub)
    return frozenset(out)


@functools.lru_cache(maxsize=4)
def _owners(site: str) -> dict[tuple[str, ...], frozenset[str]]:
    """Every leading path of every installed file (relative to `site`) -> the distributions
    with a file under it (read once per process: the RECORDs of the whole venv)."""
    owners: dict[tuple[str, ...], set[str]] = {}
    for name, info in _dists(site).items():
        try:
            with open(info / "RECORD", newline="") as f:
                paths = [row[0] for row in csv.reader(f) if row]
        except OSError:  # no RECORD: nothing of it can be offered, and it blocks nothing
            continue
        for s in paths:
            if s.startswith(".."):  # scripts in bin/
                continue
            parts = tuple(s.split("/"))
            for i in range(1, len(parts) + 1):
                owners.setdefault(parts[:i], set()).add(name)
    return {k: frozenset(v) for k, v in owners.items()}


@functools.lru_cache(maxsize=32)
def site_entries(offered: frozenset[str], site: str) -> tuple[str, ...]:
    """Paths relative to `site` to bind so that exactly the files of the `offered`
    distributions are visible: each file's shortest leading path that holds no file of
    another distribution (a top-level package, its ``.dist-info``; deeper where a namespace
    package is shared with one that is not offered)."""
    owners = _owners(site)
    chosen: set[tuple[str, ...]] = set()
    for prefix, who in owners.items():
        if who <= offered and (len(prefix) == 1 or not owners[prefix[:-1]] <= offered):
            chosen.add(prefix)
    return tuple(sorted("/".join(p) for p in chosen if (Path(site) / Path(*p)).exists()))


def course_modules(offers) -> frozenset[str]:
    """The ``gmmcourse`` submodules named in `offers` (``"gmmcourse.gibbs"`` -> ``"gibbs"``);
    ``"gmmcourse"`` alone offers the package's ``__init__`` only."""
    mods = {o.split(".", 1)[1] for o in offers if o.startswith("gmmcourse.")}
    return frozenset(mods | ({"__init__"} if mods or "gmmcourse" in offers else set()))


def course_entries(package: Path, modules) -> list[Path]:
    """The files of `package` (``src/gmmcourse``) that make up `modules`: each one's ``.py``
    and its own compiled files in ``__pycache__`` (never a subpackage such as ``grading``)."""
    out = []
    for m in sorted(modules):
        py = package / f"{m}.py"
        if py.is_file():
            out.append(py)
            out += sorted((package / "__pycache__").glob(f"{m}.cpython-*.pyc"))
    return out


def distributions(offers) -> tuple[str, ...]:
    """The distributions in `offers` (everything that is not a course module)."""
    return tuple(o for o in offers if o != "gmmcourse" and not o.startswith("gmmcourse."))
