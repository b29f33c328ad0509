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

import functools
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["KERNEL", "closure", "site_entries", "course_modules", "course_entries", "site_packages"]

KERNEL = ("ipykernel", "numpy")
"""What every kernel needs: Jupyter's kernel, and NumPy for the exports (`grading.kernel_side`)."""


def site_packages(venv: str) -> Path:
    return Path(venv) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@functools.lru_cache(maxsize=8)
def _dists(site: str) -> dict[str, md.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[site]) if d.metadata["Name"]}


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
        for r in dists[name].requires or ():
            sub = Requirement(r)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ({""} | set(req.extras))):
                todo.append(sub)
    return frozenset(out)


def _files(d: md.Distribution) -> list[tuple[str, ...]]:
    return [Path(str(f)).parts for f in d.files or () if not str(f).startswith("..")]


@functools.lru_cache(maxsize=32)
def site_entries(offered: frozenset[str], site: str) -> tuple[str, ...]:
    """Paths relative to `site` to bind so that exactly the files of the `offered`
    distributions are visible: each file's shortest leading path that holds no file of
    another distribution (a top-level package, its ``.dist-info``; deeper where a namespace
    package is shared with one that is not offered)."""
    blocked: set[tuple[str, ...]] = set()
    for name, d in _dists(site).items():
        if name not in offered:
            for parts in _files(d):
                blocked.update(parts[:i] for i in range(1, len(parts) + 1))
    chosen: set[tuple[str, ...]] = set()
    for name in offered:
        for parts in _files(_dists(site)[name]):
            for i in range(1, len(parts) + 1):
                if parts[:i] not in blocked:
                    chosen.add(parts[:i])
                    break
    # keep only the outermost of nested choices
    keep = [p for p in chosen if not any(p[:i] in chosen for i in range(1, len(p)))]
    return tuple(sorted("/".join(p) for p in keep if (Path(site) / Path(*p)).exists()))


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
