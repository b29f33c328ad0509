"""`gmmcourse.atomic`: the package's one atomic write (the grader's files and the program cache)."""

from __future__ import annotations

import os
import stat

import pytest

from gmmcourse import atomic


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class Crash(Exception):
    """The process dies between the write and the rename."""


def test_a_crash_between_write_and_rename_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    dest = tmp_path / "grades.csv"
    dest.write_text("old")
    real_replace = os.replace

    def crash(src, dst):
        assert os.path.dirname(src) == str(tmp_path)  # the temporary is beside its target
        assert open(src, "rb").read() == b"new"  # written whole before the rename
        raise Crash

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(Crash):
        atomic.atomic_write(dest, "new")
    assert dest.read_text() == "old"
    assert _names(tmp_path) == ["grades.csv"]
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    atomic.atomic_write(dest, "new")
    assert dest.read_text() == "new" and _names(tmp_path) == ["grades.csv"]


def test_several_files_an_error_before_the_end_renames_none_and_leaves_nothing(tmp_path):
    a, b = tmp_path / "a.ipynb", tmp_path / "timestamp.txt"
    a.write_text("old a")
    with pytest.raises(Crash):
        with atomic.staged() as batch:
            batch.append((atomic.stage(a, "new a"), a))
            batch.append((atomic.stage(b, "new b"), b))
            raise Crash  # e.g. the gradebook row could not be committed
    assert a.read_text() == "old a" and not b.exists()
    assert _names(tmp_path) == ["a.ipynb"]
    with atomic.staged() as batch:
        batch.append((atomic.stage(a, "new a"), a))
        batch.append((atomic.stage(b, b"new b"), b))
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert _names(tmp_path) == ["a.ipynb", "timestamp.txt"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, durable):
    dest = tmp_path / "x.jaxexport"
    dest.write_bytes(b"old")

    class FullDisk:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fdopen", FullDisk)
    with pytest.raises(OSError, match="No space"):
        atomic.atomic_write(dest, b"new", durable=durable)
    assert dest.read_bytes() == b"old" and _names(tmp_path) == ["x.jaxexport"]


def test_permissions_are_the_ones_asked_for(tmp_path):
    old = os.umask(0o077)
    try:
        atomic.atomic_write(tmp_path / "umasked", "x", 0o644)
        atomic.atomic_write(tmp_path / "exact", "x", 0o644, exact=True, durable=False)  # the program cache's
        private = tmp_path / "private"
        private.write_text("old")
        private.chmod(0o644)
        atomic.atomic_write(private, "secret", 0o600, exact=True)
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert mode == {"umasked": 0o600, "exact": 0o644, "private": 0o600}, {k: oct(v) for k, v in mode.items()}


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (tmp_path / "course").mkdir()
    page = tmp_path / "course" / "feedback.html"
    page.symlink_to(outside)
    atomic.atomic_write(page, "page")
    assert outside.read_text() == "secret"
    assert not page.is_symlink() and page.read_text() == "page"


def test_the_core_helper_imports_nothing_of_the_grader():
    """The student wheel has no `gmmcourse.grading`; `programs` writes through this module."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(atomic.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.startswith(("gmmcourse", ".")) or m == "" for m in imported), imported
