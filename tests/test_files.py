"""`gmmcourse.grading.files`: the grader's one atomic write, bounded read and course lock."""

from __future__ import annotations

import os

import pytest

from gmmcourse.grading import files


def test_atomic_write_replaces_whole_and_leaves_nothing(tmp_path):
    dest = tmp_path / "grades.csv"
    dest.write_text("old")
    files.atomic_write(dest, "new,\r\n")
    assert dest.read_bytes() == b"new,\r\n"  # text as given: no newline translation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    dest = tmp_path / "report.json"
    dest.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        files.atomic_write(dest, "new")
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    course = tmp_path / "course"
    course.mkdir()
    (course / "feedback.html").symlink_to(outside)
    files.atomic_write(course / "feedback.html", "page")
    assert outside.read_text() == "secret"
    assert not (course / "feedback.html").is_symlink() and (course / "feedback.html").read_text() == "page"


def test_read_small_is_bounded_and_follows_no_link(tmp_path):
    f = tmp_path / "timestamp.txt"
    f.write_bytes(b"x" * 100)
    assert files.read_small(f, 10) == b"x" * 10
    (tmp_path / "link").symlink_to(f)
    assert files.read_small(tmp_path / "link", 10) is None
    os.mkfifo(tmp_path / "fifo")
    assert files.read_small(tmp_path / "fifo", 10) is None  # not a regular file: no blocking read


def test_one_course_lock(tmp_path):
    held = files.lock_course(tmp_path)
    try:
        with pytest.raises(files.CourseLocked) as busy:
            files.lock_course(tmp_path)
        assert busy.value.args[0] == str(os.getpid())
    finally:
        held.close()
    files.lock_course(tmp_path).close()  # free again
