"""`make test`'s runner, scripts/run_tests.sh, run in a copy of the scripts folder with a
stand-in Python (it records how each pytest session was started and exits with the status
the test chose) and a stand-in book build: the sessions it starts, their CPU priority (the
tests that do not read the book below the book's side, which is the run's critical path),
the side sessions' logs, and an exit status that is the first failure's, whichever session
failed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_PY = r"""#!/usr/bin/env bash
case "$*" in
  *"not book"*) name=nonbook ;;
  *--ignore*) name=book ;;
  *test_site.py*) name=site ;;
  *test_colab_like.py*) name=colab ;;
  *) name=other ;;
esac
echo "$name $(cut -d' ' -f19 /proc/$$/stat) $*" >>"$FAKE_LOG"
echo "session $name ran"
code="FAKE_$name"
exit "${!code:-0}"
"""


def _run(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, dict[str, tuple[int, str]]]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "scripts" / "run_tests.sh", repo / "scripts" / "run_tests.sh")
    (repo / "scripts" / "build_book.sh").write_text('#!/usr/bin/env bash\necho "book built"\nexit "${FAKE_build:-0}"\n')
    (repo / "fakepy").write_text(FAKE_PY)
    for f in (repo / "scripts" / "build_book.sh", repo / "fakepy"):
        f.chmod(0o755)
    log = tmp_path / "sessions.log"
    log.unlink(missing_ok=True)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "FAKE_"))}
    run_env.update(PY=str(repo / "fakepy"), FAKE_LOG=str(log), **env)
    res = subprocess.run(["bash", str(repo / "scripts" / "run_tests.sh")], cwd=tmp_path, env=run_env,
                         capture_output=True, text=True, timeout=120)
    sessions = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        name, nice, args = line.split(" ", 2)
        assert name not in sessions, f"{name} started twice: {line}"
        sessions[name] = (int(nice), args)
    return res, sessions


def test_sessions_priorities_and_logs(tmp_path):
    res, sessions = _run(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(sessions) == {"nonbook", "book", "site", "colab"}, sessions
    book_nice = sessions["book"][0]
    assert sessions["site"][0] == sessions["colab"][0] == book_nice
    assert sessions["nonbook"][0] == min(book_nice + 5, 19), sessions  # TEST_NICE's default
    args = sessions["book"][1]
    assert "--ignore=tests/test_site.py" in args and "--ignore=tests/test_colab_like.py" in args
    assert "-m book" in sessions["site"][1] and "-m not book" in sessions["nonbook"][1]
    # the side sessions' output is in the book tests' log, which is printed at the end
    book_log = (tmp_path / "repo" / "_build" / "book-tests.log").read_text()
    assert all(f"session {s} ran" in book_log for s in ("book", "site", "colab")), book_log
    assert "session site ran" in res.stdout and "session colab ran" in res.stdout


def test_exit_status_is_the_first_failures_whichever_session(tmp_path):
    for env, expected in (({"FAKE_site": "1"}, 1), ({"FAKE_colab": "3"}, 3), ({"FAKE_book": "4", "FAKE_site": "1"}, 4),
                          ({"FAKE_nonbook": "2", "FAKE_site": "1"}, 2), ({"FAKE_colab": "5", "FAKE_site": "5"}, 0),
                          ({"FAKE_build": "7"}, 7)):
        res, sessions = _run(tmp_path, **env)
        assert res.returncode == expected, (env, res.stdout[-2000:], res.stderr)
    assert set(sessions) == {"nonbook"}  # the build failed: no book tests
    assert "the book build FAILED (exit 7)" in res.stdout and "book built" in res.stdout


def test_niceness_setting(tmp_path):
    res, sessions = _run(tmp_path, TEST_NICE="0")
    assert res.returncode == 0 and sessions["nonbook"][0] == sessions["book"][0], sessions
    res, sessions = _run(tmp_path, TEST_NICE="high")
    assert res.returncode == 2 and not sessions
    assert res.stderr.strip() == "TEST_NICE must be a niceness from 0 to 19, not 'high'"
