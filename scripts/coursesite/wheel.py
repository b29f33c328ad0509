"""The student package: the wheel (gmmcourse without the grader), its pinned requirements and extras.

Its version is the package's with ``.post<N>`` (N commits), its bytes are reproducible (fixed
timestamps), and its requirements come from ``requirements.lock``: every pin is the lock's.
`student_extras_for` says which extras a notebook's imports need, and refuses an import that
neither the wheel nor an extra installs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import sys
import tomllib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from .config import ROOT

# Modules of src/gmmcourse that students do not get: the grader (trusted checks, hidden
# references) and the plain-JAX benchmark baseline.
EXCLUDED_MODULES = ("grading", "plain.py")
# A fixed timestamp for the files inside the wheel: the same sources give the same bytes.
WHEEL_DATE = (2025, 1, 1, 0, 0, 0)
# The optional parts of the student wheel (pyproject's optional-dependencies of these names) that a
# notebook's set-up cell may install; "gpu" is chosen by the cell itself.
STUDENT_EXTRAS = ("compare",)
# The packages whose versions decide the course's numbers (random streams, compiled programs):
# the set-up cell pins these and keeps a student's other packages where they are compatible.
CORE_PINS = ("genjax", "jax", "jaxlib")


class UnprovidedImport(ValueError):
    """A student notebook imports a module that neither the student wheel nor one of its extras installs."""


# ----------------------------------------------------------------------------- version


def package_version(root: Path = ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def student_version(root: Path = ROOT) -> str:
    """The student wheel's version: the package's, then ``.post<N>`` with N the number of commits
    of the course, so every published build of a newer commit is a newer version and a
    student's set-up cell updates to it; the package's own version outside a git checkout."""
    import subprocess

    base = package_version(root)
    try:
        n = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return base
    return f"{base}.post{n}" if n.isdigit() else base


def wheel_name(root: Path = ROOT) -> str:
    return f"gmmcourse-{student_version(root)}-py3-none-any.whl"


# ----------------------------------------------------------------------------- pins from the lock


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_pins(root: Path = ROOT) -> tuple[Mapping[str, str], Mapping[str, frozenset[str]]]:
    """The lock's ``name==version`` lines by normalised name, and each package's ``# via`` parents.

    The lock is read and parsed once per version of the file (its path, modification time and
    size): a site build asks for every notebook (`student_extras_for`), three times each.
    """
    lock = (root / "requirements.lock").resolve()
    st = lock.stat()
    return _parse_lock(str(lock), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parse_lock(path: str, mtime_ns: int, size: int) -> tuple[Mapping[str, str], Mapping[str, frozenset[str]]]:
    """`_lock_pins` of the file at `path`, read-only (cached: every caller shares the result);
    `mtime_ns` and `size` only key the cache."""
    pins: dict[str, str] = {}
    parents: dict[str, set[str]] = {}
    current = None
    for line in Path(path).read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line):
            current = _normalise(m.group(1).split("[")[0])
            pins[current] = line.split(" ")[0].strip()
            parents[current] = set()
        elif current and (m := re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9_.\-]+)(\s*\(pyproject\.toml\))?\s*$", line)):
            if m.group(1) != "via":
                parents[current].add("<project>" if m.group(2) else _normalise(m.group(1)))
    return MappingProxyType(pins), MappingProxyType({name: frozenset(ps) for name, ps in parents.items()})


def _lock_closure(roots: set[str], root: Path = ROOT) -> set[str]:
    """`roots` (normalised names) and everything the lock installs because of them."""
    pins, parents = _lock_pins(root)
    missing = roots - set(pins)
    if missing:
        raise ValueError(f"requirements.lock lacks {sorted(missing)}: run `make lock`")
    needed = set(roots)
    changed = True
    while changed:
        changed = False
        for name, ps in parents.items():
            if name not in needed and ps & needed:
                needed.add(name)
                changed = True
    return needed


def student_requirements(root: Path = ROOT) -> str:
    """requirements-student.txt: the lock's pins of the package's runtime dependencies, those of
    its student extras (`STUDENT_EXTRAS`), and theirs.

    The closure follows the lock's ``# via`` annotations from pyproject.toml, so every version is
    the lock's (the tests install it and check that nothing else is pulled in).
    """
    from packaging.requirements import Requirement

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    reqs = list(project["dependencies"]) + [r for e in STUDENT_EXTRAS for r in optional.get(e, [])]
    pins, _ = _lock_pins(root)
    needed = _lock_closure({_normalise(Requirement(r).name) for r in reqs}, root)
    header = ("# Pinned dependencies of the gmmcourse student wheel and its extras (generated by\n"
              "# scripts/build_site.py from requirements.lock).\n"
              "# Install: pip install -r requirements-student.txt gmmcourse-*.whl\n")
    return header + "".join(pins[n] + "\n" for n in sorted(needed))


def core_requirements(root: Path = ROOT) -> str:
    """requirements-core.txt: the lock's pins of `CORE_PINS` only."""
    pins = {_normalise(m.group(1)): m.group(0) for m in
            re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", (root / "requirements.lock").read_text(), re.M)}
    missing = [n for n in CORE_PINS if n not in pins]
    if missing:
        raise ValueError(f"requirements.lock lacks {missing}: run `make lock`")
    header = ("# The versions the course's numbers depend on (generated by scripts/build_site.py from\n"
              "# requirements.lock); every other requirement of gmmcourse is a range (the wheel's metadata).\n")
    return header + "".join(pins[n] + "\n" for n in CORE_PINS)


@functools.lru_cache(maxsize=2)
def _module_distributions(path: tuple[str, ...]) -> Mapping[str, list[str]]:
    """`importlib.metadata.packages_distributions()` (seconds: it reads every installed
    distribution's file list), once per build; `path` (the import path) keys the cache."""
    import importlib.metadata

    return MappingProxyType(importlib.metadata.packages_distributions())


def student_extras_for(needed: list[str], root: Path = ROOT, where: str = "a notebook") -> list[str]:
    """The `STUDENT_EXTRAS` a notebook importing `needed` must install, so that every one of its
    imports comes with the student wheel (its requirements' closure in the lock, or an extra's).

    Raises `UnprovidedImport`, naming the module, where none does: a student would meet a
    ModuleNotFoundError after a successful set-up cell.
    """
    from packaging.requirements import Requirement

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    base = _lock_closure({_normalise(Requirement(r).name) for r in project["dependencies"]}, root)
    by_extra = {e: _lock_closure({_normalise(Requirement(r).name) for r in optional.get(e, [])}, root) - base
                for e in STUDENT_EXTRAS}
    dists = _module_distributions(tuple(sys.path))
    extras, unprovided = [], []
    for module in needed:
        if module == "gmmcourse":
            continue
        names = {_normalise(d) for d in dists.get(module, [])}
        if names & base:
            continue
        chosen = [e for e, closure in by_extra.items() if names & closure]
        if chosen:
            extras += [e for e in chosen[:1] if e not in extras]
        else:
            unprovided.append(module)
    if unprovided:
        raise UnprovidedImport(f"{where} imports {', '.join(unprovided)}, which neither the student package's "
                               f"requirements nor an extra ({', '.join(STUDENT_EXTRAS)}) install: add it to "
                               "pyproject.toml's dependencies or to an extra")
    return sorted(extras)


# ----------------------------------------------------------------------------- the wheel


def _student_metadata(root: Path) -> str:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {student_version(root)}",
             f"Summary: {project['description']} (student package)",
             f"Requires-Python: {project['requires-python']}", "License: MIT"]
    lines += [f"Requires-Dist: {r}" for r in project["dependencies"]]
    optional = project.get("optional-dependencies", {})
    for extra in ("gpu", *STUDENT_EXTRAS):
        if optional.get(extra):
            lines.append(f"Provides-Extra: {extra}")
            lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in optional[extra]]
    body = ("The reference package of the gmm-course (Gaussian mixture models with GenJAX), as\n"
            "students use it in the course notebooks.\n")
    return "\n".join(lines) + "\nDescription-Content-Type: text/markdown\n\n" + body


def student_package_files(root: Path = ROOT) -> list[Path]:
    pkg = root / "src" / "gmmcourse"
    files = []
    for p in sorted(pkg.rglob("*")):
        rel = p.relative_to(pkg)
        if not p.is_file() or "__pycache__" in rel.parts or p.suffix in (".pyc", ".pyo"):
            continue
        if rel.parts[0] in EXCLUDED_MODULES:
            continue
        files.append(p)
    return files


def build_student_wheel(out_dir: Path, root: Path = ROOT) -> Path:
    """Write the student wheel (pure Python, reproducible bytes) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dist_info = f"gmmcourse-{student_version(root)}.dist-info"  # the wheel's version (pip names it by this)
    entries: list[tuple[str, bytes]] = []
    for p in student_package_files(root):
        entries.append(("gmmcourse/" + p.relative_to(root / "src" / "gmmcourse").as_posix(), p.read_bytes()))
    entries.append((f"{dist_info}/METADATA", _student_metadata(root).encode()))
    entries.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: gmm-course build_site.py\n"
                                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    entries.append((f"{dist_info}/top_level.txt", b"gmmcourse\n"))
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    path = out_dir / wheel_name(root)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=WHEEL_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def write_student_folder(student: Path, root: Path = ROOT) -> Path:
    """The site's ``student/`` folder, what the set-up cells install from: the wheel, its pins
    (all, and the core ones) and ``latest.json`` (the newest version and its wheel's name)."""
    build_student_wheel(student, root)
    (student / "requirements-student.txt").write_text(student_requirements(root))
    (student / "requirements-core.txt").write_text(core_requirements(root))
    (student / "latest.json").write_text(json.dumps({"version": student_version(root), "wheel": wheel_name(root)}) + "\n")
    return student
