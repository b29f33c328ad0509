"""The site build reads requirements.lock once, not three times per notebook.

`coursesite.wheel.student_extras_for` runs for every chapter and every release of a build; the
lock's pins and ``# via`` parents are parsed once per version of the file (its path, mtime and
size), and a changed lock is read again. The installed distributions' module lists (seconds to
collect) are also collected once.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from coursesite import wheel  # noqa: E402

# What a build's notebooks import, one list per notebook (chapters and releases alike).
NOTEBOOKS = [["gmmcourse", "jax", "numpy"], ["gmmcourse", "numpyro", "scipy"], ["gmmcourse", "sklearn"],
             ["gmmcourse", "matplotlib", "pandas"], ["gmmcourse", "genjax"], ["gmmcourse", "arviz_stats"]] * 3


@pytest.fixture
def course(tmp_path):
    """A course root of its own (a fresh cache key): the real pyproject.toml and lock."""
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def lock_reads(monkeypatch, course):
    """How many times the course's requirements.lock has been read."""
    reads = []
    real = Path.read_text

    def counting(self, *args, **kwargs):
        if self.name == "requirements.lock" and self.resolve() == (course / "requirements.lock").resolve():
            reads.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    return reads


def test_the_lock_is_read_once_for_every_notebook_of_a_build(course, lock_reads):
    extras = [wheel.student_extras_for(needed, course) for needed in NOTEBOOKS]
    assert extras == [wheel.student_extras_for(needed, ROOT) for needed in NOTEBOOKS]  # the same answers
    assert ["compare"] in extras and [] in extras
    assert len(lock_reads) == 1, (f"requirements.lock was read {len(lock_reads)} times for {len(NOTEBOOKS)} "
                                  "notebooks: coursesite.wheel._lock_pins should parse it once per version")


def test_a_changed_lock_is_read_again(course, lock_reads):
    assert wheel.student_extras_for(["gmmcourse", "numpyro"], course) == ["compare"]
    lock = course / "requirements.lock"
    kept = [line for line in lock.read_text().splitlines() if not line.startswith("numpyro==")]
    lock.write_text("\n".join(kept) + "\n")
    os.utime(lock, ns=(lock.stat().st_atime_ns, lock.stat().st_mtime_ns + 10**9))  # a later mtime, whatever the clock
    with pytest.raises(ValueError, match=r"requirements.lock lacks \['numpyro'\]"):
        wheel.student_extras_for(["gmmcourse", "numpyro"], course)
    assert len(lock_reads) == 3  # the first version, the test's own read, the new version


def test_the_installed_distributions_are_listed_once_for_every_notebook(monkeypatch, course):
    calls = []
    real = importlib.metadata.packages_distributions

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(importlib.metadata, "packages_distributions", counting)
    wheel._module_distributions.cache_clear()
    for needed in NOTEBOOKS:
        wheel.student_extras_for(needed, course)
    assert len(calls) == 1, (f"packages_distributions() ran {len(calls)} times for {len(NOTEBOOKS)} notebooks: "
                             "coursesite.wheel._module_distributions should collect it once")


def test_the_student_wheels_files_name_no_grader_marker():
    """The files the student wheel ships (`wheel.student_package_files`) carry none of the
    markers the built bundle is scanned for (tests/test_site.py does it on a built site, at
    the end of `make test`): a docstring naming the grader's package fails here in seconds.
    Found by fresh-clone run 8: atomic.py's and course.py's docstrings named it."""
    from test_book import MARKERS

    files = wheel.student_package_files()
    assert any(p.name == "course.py" for p in files) and not any("grading" in p.parts for p in files)
    found = [f"{p.relative_to(ROOT)}: {m!r}" for p in files for m in MARKERS if m.encode() in p.read_bytes()]
    assert not found, "the student wheel would leak (reword these):\n" + "\n".join(found)
