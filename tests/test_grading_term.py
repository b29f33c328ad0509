"""The grader over a term, on the toy assignment (benchmarks/hostile/toy.py): a kill and a resume,
hand grades that survive regrades, a second grader, recording failures, Ctrl-C, a lost
scheduler, and the instructors' grades in the feedback. Needs bubblewrap."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from proc_state import can_run, ctrl_c, sigint_default, start_time
from grading_helpers import (
    LIMITS,
    _env,
    _grade,
    dump,
    needs_bwrap,
    scores,
    toy,
)

from gmmcourse.grading.engine import GradingError, autograde
from gmmcourse.grading.planning import graded
from gmmcourse.grading.sandbox import Limits

pytestmark = needs_bwrap


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    names = ["solution", "blank", "half", "os_exit", "sys_exit", "nan_answer", "prefilled_answer", "deleted_tests"]
    course = toy.write_course(tmp_path, names)
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--registry", "toy:ASSIGNMENTS", "--serial", "--no-progress", "--no-warm", "--cell-timeout", "60"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = course / "gradebook.db"
    deadline = time.time() + 900  # a guard against a hang, not a measured bound
    n = 0
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            con = sqlite3.connect(db)
            n = con.execute("select count(*) from gmm_autograde").fetchone()[0]
            con.close()
        except sqlite3.Error:
            continue
        if n >= 2:
            break
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert 2 <= n < len(names)
    mid = dump(course)
    assert mid["submissions"] == len(mid["markers"])  # every row complete (one transaction each)
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"skipped {len(mid['markers'])} unchanged" in r.stderr
    d = dump(course)
    assert d["submissions"] == len(names) and len(d["grades"]) == 3 * len(names)
    assert scores(course) == pytest.approx(toy.expected(names))


# --------------------------------------------------------------------------- a whole term


def _manual(course: Path, student: str, grade_id: str = "explain"):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        g = gb.find_grade(grade_id, "toy", "toy", student)
        c = gb.find_comment(grade_id, "toy", "toy", student)
        return g.manual_score, g.needs_manual_grade, c.manual_comment


def _grade_by_hand(course: Path, student: str, score: float, comment: str, grade_id: str = "explain"):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        g = gb.find_grade(grade_id, "toy", "toy", student)
        g.manual_score = score
        g.needs_manual_grade = False
        gb.find_comment(grade_id, "toy", "toy", student).manual_comment = comment
        gb.db.commit()


def test_manual_grades_survive_regrades_resubmissions_and_source_edits(tmp_path):
    course = toy.write_course(tmp_path, ["solution", "half"])
    _grade(course)
    assert _manual(course, "solution")[1] is True  # waits for the instructor
    _grade_by_hand(course, "solution", 1.0, "Nice explanation.")
    _grade_by_hand(course, "half", 0.5, "Half right.")
    # --force regrades everything: the instructor's grades and comments stay
    _grade(course, force=True)
    assert _manual(course, "solution") == (1.0, False, "Nice explanation.")
    total = {m[0]: m[5] for m in dump(course)["markers"]}
    assert total["solution"] == 6.0  # 5 auto + 1 by hand
    # a typo fixed in the source notebook's text regrades nobody
    src = tmp_path / "solutions" / "toy" / "toy.ipynb"
    nb = nbformat.read(src, 4)
    nb.cells[0].source += "\nTypo fixed."
    nbformat.write(nb, src)
    s = _grade(course)
    assert s.graded == [] and len(s.skipped) == 2
    # a resubmission that changes code but not the written answer keeps the manual grade
    sub = course / "submitted" / "half" / "toy" / "toy.ipynb"
    nbformat.write(toy.notebook(), sub)
    _grade(course)
    assert _manual(course, "half") == (0.5, False, "Half right.")
    assert scores(course)["half"] == 5.5
    # a changed written answer keeps the old grade visible, flagged for regrading
    nb = toy.notebook()
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == "explain":
            c.source = "A new, longer explanation."
    nbformat.write(nb, sub)
    _grade(course)
    assert _manual(course, "half") == (0.5, True, "Half right.")


def test_second_grader_on_the_same_course_exits(tmp_path):
    import fcntl

    course = toy.write_course(tmp_path, ["solution"])
    with open(course / ".autograde.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("4242")
        f.flush()
        with pytest.raises(GradingError, match="another autograde is already grading"):
            _grade(course)
    _grade(course)  # released: grades normally
    assert scores(course) == {"solution": 5.0}


def test_recording_failure_stops_cleanly(tmp_path, monkeypatch):
    """A full disk while recording: one clear error, nothing half-written, no temporary files,
    no feedback without a gradebook row; the next run resumes."""
    import errno

    import gmmcourse.grading.feedback as fbm
    from gmmcourse.grading.engine import RecordingError

    course = toy.write_course(tmp_path, ["solution", "half", "blank"])
    real = fbm.stage_file
    calls = {"n": 0}

    def full_disk(path, text):
        calls["n"] += 1
        if calls["n"] > 3:  # the first submission's three files fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(fbm, "stage_file", full_disk)
    with pytest.raises(RecordingError, match="No space left"):
        _grade(course)
    recorded = [m[0] for m in dump(course)["markers"]]
    assert len(recorded) == 1
    assert not list(course.rglob("*.tmp"))
    fb_students = {p.parts[-3] for p in (course / "feedback").rglob("*.html")}
    assert fb_students == set(recorded)
    monkeypatch.setattr(fbm, "stage_file", real)
    _grade(course)
    assert scores(course) == {"solution": 5.0, "half": 2.0, "blank": 0.0}


def test_scheduler_without_workers_times_out(tmp_path):
    from distributed import LocalCluster

    course = toy.write_course(tmp_path, ["solution"])
    said = []

    # a plain tcp:// scheduler on loopback, in this process: trusted here
    with LocalCluster(n_workers=0, dashboard_address=":0", processes=False, protocol="tcp://") as cluster:
        with pytest.raises(GradingError, match="no Dask worker joined .* within 3 s"):
            autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=LIMITS, progress=False, warm_cache=False,
                      echo=said.append, serial=False, scheduler=cluster.scheduler_address, worker_wait=3,
                      trusted_network=True)
    assert any("waiting up to 3 s for Dask workers" in line for line in said), said
    # nothing is recorded (on Dask the gradebook is opened only once workers have the
    # submissions: here it is not even created)
    assert graded(course) == {} and not (course / "grades.csv").exists()


def test_loose_notebook_is_reported(tmp_path):
    course = toy.write_course(tmp_path, ["solution"])
    (course / "submitted" / "solution" / "toy.ipynb").write_text("{}")
    said = []
    autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=LIMITS, progress=False, warm_cache=False,
              echo=said.append, serial=True)
    assert any("submitted/solution/toy.ipynb" in s and "is ignored" in s for s in said)


def _cgroups_of(owners: set[int]) -> set[Path]:
    """Per-submission cgroups (``gmmgrade-<owner>-*``) of ``owners``, on v1 or v2."""
    found = set()
    for pattern in ("*/gmmgrade-*", "*/*/gmmgrade-*", "gmmgrade-*"):
        for d in Path("/sys/fs/cgroup").glob(pattern):
            parts = d.name.split("-")
            if len(parts) > 2 and parts[1].isdigit() and int(parts[1]) in owners:
                found.add(d)
    return found


def _can_run(seen: dict[tuple[int, int], str]) -> list[tuple[int, str]]:
    """Those of ``seen`` ((pid, start time): command line) that can still run code
    (`proc_state.can_run`: a zombie, an exiting process or one with a SIGKILL pending cannot)."""
    return [(pid, cmd) for (pid, start), cmd in seen.items() if can_run(pid, start)]


ENDS_WITH_ITS_PARENT = "multiprocessing.resource_tracker"
"""Python's resource tracker (started by the grader for the Dask workers) runs nothing of a
student's and exits by itself once the grader's end of its pipe is closed, that is just after
the grader exits; every other process must be dead when the grader exits."""


@pytest.mark.slow
def test_ctrl_c_stops_everything_and_leaves_nothing(tmp_path):
    """Ctrl-C during a parallel run on a busy grader (an infinite loop, a memory bomb and
    honest notebooks in their sandboxes): exit 130, and nothing of the run is left: no
    worker, kernel or sandbox process that can still run when the grader has exited, no
    cgroup, no scratch folder or mount, no temporary file. The mechanism is tested here; how
    long stopping takes is measured by benchmarks/bench_grading.py (no wall-clock bound a
    loaded machine could break)."""
    names = ["infinite_loop", "memory_bomb_list", "solution", "half"]
    course = toy.write_course(tmp_path, names)
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--registry", "toy:ASSIGNMENTS", "--workers", "2", "--no-progress", "--no-warm", "--cell-timeout", "6000",
           "--notebook-timeout", "6000"]
    # the grader's own temporary folders go to a TMPDIR of its own (others may grade meanwhile)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**_env(), "TMPDIR": str(tmp)}
    # Scratch folders (gmg-<pid>-*) and cgroups (gmmgrade-<pid>-*) are named by the process
    # that made them: only this grader's process tree counts (other tests may grade meanwhile).
    tree: set[int] = set()
    seen: dict[tuple[int, int], str] = {}  # pids are reused on a busy machine: (pid, start time)

    def grader_pids():
        try:
            proc = psutil.Process(p.pid)
            kids = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return tree
        for q in kids:
            t = start_time(q.pid)
            if t is not None and (q.pid, t) not in seen:
                seen[(q.pid, t)] = " ".join(_cmdline(q.pid))
            tree.add(q.pid)
        return tree

    def scratch():
        grader_pids()
        return {d for d in Path("/tmp").glob("gmg-*-*") if d.name.split("-")[1].isdigit()
                and int(d.name.split("-")[1]) in tree}

    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=sigint_default)
    try:
        guard = time.monotonic() + 900  # against a hang only
        kernels = []
        while time.monotonic() < guard and p.poll() is None and len(kernels) < 2:
            grader_pids()
            kernels = [q for q in tree if q != p.pid and psutil.pid_exists(q)
                       and "ipykernel" in " ".join(_cmdline(q))]
            time.sleep(0.2)
        assert p.poll() is None and len(kernels) >= 2, p.communicate()  # both workers are running kernels
        grader_pids()
        # what must go is there; the run folder is named by the grader (a killed one's is cleaned up)
        assert scratch() and _cgroups_of(tree) and list(tmp.glob(f"gmg-{p.pid}-run-*")), (scratch(), tree)
        mounts_before = {d for d in scratch() if os.path.ismount(d)}
    except BaseException:  # a failed precondition must not leave the grader (6,000 s limits) running
        if p.poll() is None:
            ctrl_c(p, 900)
        raise
    out, err = ctrl_c(p, 900)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    # The grader has killed its workers, kernels and sandboxes before it exits: none can run
    # code now (dead, a zombie that the machine's pid 1 never reaps, exiting, or killed).
    left = _can_run(seen)
    assert not [q for q in left if ENDS_WITH_ITS_PARENT not in q[1]], left
    guard = time.monotonic() + 300  # the tracker's own exit, which only a hang could stop
    while left and time.monotonic() < guard:
        time.sleep(0.1)
        left = _can_run(seen)
    assert not left, left
    assert not scratch(), scratch()
    assert not [d for d in mounts_before if os.path.ismount(d)]
    assert not _cgroups_of(tree), _cgroups_of(tree)
    assert not list(tmp.glob("gmg-*")), list(tmp.glob("gmg-*"))


@pytest.mark.slow
def test_ctrl_c_while_the_cluster_starts_says_one_line(tmp_path):
    """Ctrl-C pressed as the local Dask cluster starts (its first worker process has just
    appeared): exit 130 with the grader's one line, and nothing else on stderr (Dask's exit
    hook used to close the half-made cluster and print "AssertionError: Status.init", then
    asyncio "Nanny failed to start"); no process of the run can run code once the grader has
    exited. Found by pressing Ctrl-C at 40 moments of a run, from its start to its grading:
    only this one said more than its line."""
    course = toy.write_course(tmp_path, ["infinite_loop", "solution"])
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--registry", "toy:ASSIGNMENTS", "--workers", "2", "--no-progress", "--no-warm", "--cell-timeout", "6000",
           "--notebook-timeout", "6000"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=sigint_default)
    seen: dict[tuple[int, int], str] = {}
    try:
        guard = time.monotonic() + 600  # against a hang only
        while time.monotonic() < guard and p.poll() is None:
            try:
                kids = psutil.Process(p.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for q in kids:
                t = start_time(q.pid)
                if t is not None:
                    seen.setdefault((q.pid, t), " ".join(_cmdline(q.pid)))
            if any("multiprocessing" in c and ENDS_WITH_ITS_PARENT not in c for c in seen.values()):
                break  # a worker process of the cluster: it is starting now
            time.sleep(0.01)
        assert p.poll() is None and seen, p.communicate()
    except BaseException:
        if p.poll() is None:
            ctrl_c(p, 900)
        raise
    out, err = ctrl_c(p, 900)
    assert p.returncode == 130, err
    assert err.strip() == "interrupted; graded submissions are saved, re-run to resume", err
    left = _can_run(seen)
    assert not [q for q in left if ENDS_WITH_ITS_PARENT not in q[1]], left


@pytest.mark.slow
def test_stop_processes_kills_every_worker_and_sandbox_before_it_returns():
    """The first step of stopping (Ctrl-C, a failure): when `stop_processes` returns, no
    worker, kernel or sandbox process of the local cluster can run any more. They were
    killed, not left to Dask's closing or to bwrap's --die-with-parent, which would end them
    too, later: the test above sees only the end and cannot tell the difference."""
    import json
    from dataclasses import asdict, replace

    from gmmcourse.grading.runners import grade_task, local_cluster, stop_processes
    from gmmcourse.grading.sandbox import CGroup, cleanup_stale_scratch

    nb = nbformat.writes(toy.notebook(extra_before=["while True:\n    pass"]))
    exports = [(q.grade_id, q.code) for q in toy.TOY.parts]
    limits = asdict(replace(LIMITS, cell_timeout=6000, notebook_timeout=6000))
    seen: dict[tuple[int, int], str] = {}
    try:
        with local_cluster(2) as (client, cluster):
            workers = {n.pid for n in cluster.workers.values()}
            futs = [client.submit(grade_task, nb, exports, json.dumps(toy._inputs()), limits, None, pure=False)
                    for _ in range(2)]
            guard = time.monotonic() + 900  # against a hang only
            kernels = 0
            while time.monotonic() < guard and kernels < 2:
                for w in workers:
                    try:
                        tree = [psutil.Process(w), *psutil.Process(w).children(recursive=True)]
                    except psutil.NoSuchProcess:
                        continue
                    for q in tree:
                        t = start_time(q.pid)
                        if t is not None and (q.pid, t) not in seen:
                            seen[(q.pid, t)] = " ".join(_cmdline(q.pid))
                kernels = sum("ipykernel" in c for c in seen.values())
                time.sleep(0.2)
            assert kernels >= 2 and len(workers) == 2, seen  # a kernel in each worker's sandbox
            stop_processes(cluster)
            left = _can_run(seen)
            assert not left, left
            del futs
    finally:
        CGroup.cleanup_stale()  # what the engine does next: the killed workers' cgroups and scratch
        cleanup_stale_scratch()


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


@pytest.mark.slow
def test_scheduler_death_records_no_zeros(tmp_path):
    """Issue 14, defect 2: the Dask scheduler dies mid-run. What was graded stays; the rest is
    'not graded' (no gradebook row, no CSV row, no feedback), and the next run grades it."""
    import socket

    import dask

    course = toy.write_course(tmp_path, [])
    for i in range(4):
        d = course / "submitted" / f"s{i}" / "toy"
        d.mkdir(parents=True)
        nbformat.write(toy.notebook(extra_before=["import time; time.sleep(3)"]), d / "toy.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask_bin = Path(sys.executable).parent / "dask"
    quiet = dict(env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sched = subprocess.Popen([str(dask_bin), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--dashboard-address", ":0"], **quiet)
    worker = subprocess.Popen([str(dask_bin), "worker", address, "--nthreads", "1", "--no-nanny"], **quiet)
    guard = time.monotonic() + 300  # the scheduler listens before grading starts (a hang guard)
    while time.monotonic() < guard:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            break
        except OSError:
            time.sleep(0.2)

    def kill_after_first_grade():
        end = time.monotonic() + 900  # a guard against a hang
        while time.monotonic() < end and not list(course.glob("feedback/*/toy/toy.html")):
            time.sleep(0.1)
        sched.kill()

    killer = threading.Thread(target=kill_after_first_grade, daemon=True)
    killer.start()
    # the honest cells sleep 3 s: far below the 120 s cell limit at any load
    limits = Limits(cell_timeout=120, notebook_timeout=300, export_timeout=30, memory_bytes=512 << 20)
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "5s"}):
            s = autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=limits, progress=False,
                          warm_cache=False, echo=lambda s: None, scheduler=address, worker_wait=600,
                          trusted_network=True)
    finally:
        sched.kill()
        worker.kill()
        sched.wait()
        worker.wait()
    status = {g[0]: g[3] for g in s.graded}
    ok = sorted(k for k, v in status.items() if v == "ok")
    assert ok and "error" in status.values(), status
    assert sorted(scores(course)) == ok  # only what was graded is in the gradebook
    rows = list(csv.DictReader(open(course / "grades.csv")))
    assert sorted(r["student_id"] for r in rows) == ok and all(float(r["raw_score"]) == 5.0 for r in rows)
    assert sorted(p.parent.parent.name for p in course.glob("feedback/*/toy/toy.html")) == ok
    autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=limits, progress=False, warm_cache=False,
              echo=lambda s: None, serial=True)
    assert scores(course) == {f"s{i}": 5.0 for i in range(4)}


def test_feedback_shows_the_instructors_grades(tmp_path):
    """`feedback` adds formgrader's grades and comments to the students' pages, without
    regrading; running it again replaces (not repeats) that section; the CLI says so."""
    course = toy.write_course(tmp_path, ["solution", "half"])
    _grade(course)
    page = course / "feedback" / "solution" / "toy" / "toy.html"
    before = page.read_text()
    _grade_by_hand(course, "solution", 1.0, "Nice <b>explanation</b>.")
    r = subprocess.run([sys.executable, "-m", "gmmcourse.grading", "feedback", "toy", "--course", str(course),
                        "--registry", "toy:ASSIGNMENTS"], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "updated 2 feedback page(s)" in r.stderr
    text = page.read_text()
    pending = before[before.index("<!-- gmm-manual-pending -->"): before.index("<!-- /gmm-manual-pending -->") + 29]
    # the autograder's part is unchanged, but for its now stale "graded later" line (issue 22)
    assert text.startswith(before[: before.index("</body>")].replace(pending, ""))
    assert "graded by an instructor later" not in text
    assert "Graded by an instructor" in text and "Nice &lt;b&gt;explanation&lt;/b&gt;." in text
    assert "Total score: 6 / 6" in text and "SECRET-HIDDEN-TEST" not in text
    half = (course / "feedback" / "half" / "toy" / "toy.html").read_text()
    assert "not graded yet / 1" in half
    _grade_by_hand(course, "solution", 0.5, "Shorter next time.")
    from gmmcourse.grading.engine import update_feedback

    assert update_feedback(["toy"], course, registry=toy.ASSIGNMENTS) == 2
    text = page.read_text()
    assert text.count("Graded by an instructor") == 1 and "Shorter next time." in text and "Nice" not in text
    assert "Total score: 5.5 / 6" in text
    assert scores(course) == {"solution": 5.0, "half": 2.0}  # nothing was regraded
