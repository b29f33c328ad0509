"""The grader's Dask processes run as root: nobody else on the machine may run code through
them (issue 22, item 1), and a remote scheduler is reached over TLS or refused. Needs root
(to run the probe as another uid) and bubblewrap."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from grading_helpers import HERE, LIMITS, _env, needs_bwrap, toy
from proc_state import ctrl_c, sigint_default

from gmmcourse.grading.engine import GradingError, autograde

pytestmark = needs_bwrap

NOBODY = 65534
PROBE = HERE / "dask_probe.py"


def _needs_root():
    assert os.geteuid() == 0, "this test runs the probe as another uid: run the suite as root"


def _probe(ports: list[int]) -> tuple[dict, list[str]]:
    """Run tests/dask_probe.py as uid NOBODY against ``ports``; (its report, files its code made)."""
    marker = tempfile.mkdtemp(prefix="gmg-probe-")
    os.chmod(marker, 0o700)  # only root can write here: a file here means code ran as root
    try:
        r = subprocess.run([sys.executable, str(PROBE), marker, str(NOBODY), *map(str, ports)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1]), os.listdir(marker)
    finally:
        for f in os.listdir(marker):
            os.unlink(os.path.join(marker, f))
        os.rmdir(marker)


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections("inet")
        except psutil.Error:
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def test_probe_runs_code_on_an_unprotected_cluster():
    """The probe's positive control: against a cluster set up as the grader's used to be
    (plain TCP, default dashboard), code sent by another uid runs as root."""
    _needs_root()
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        port = int(cluster.scheduler_address.rsplit(":", 1)[1])
        report, made = _probe([port])
    assert any(v.startswith("ran") for v in report.values()) and made, report


@pytest.mark.slow
def test_another_uid_runs_no_code_on_the_graders_cluster(tmp_path):
    """During a grading run on the default (local Dask) path, a process of another uid that
    connects to every TCP port the grader's processes listen on, over TCP and over TLS with
    its own credentials, gets no code run; every port is on loopback."""
    _needs_root()
    course = toy.write_course(tmp_path, [])
    for name in ("s1", "s2"):
        d = course / "submitted" / name / "toy"
        d.mkdir(parents=True)
        # honest and slow: still running when the probe is done (it is stopped by Ctrl-C)
        nbformat.write(toy.notebook(extra_before=["import time; time.sleep(3000)"]), d / "toy.ipynb")
    cmd = [sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
           "--registry", "toy:ASSIGNMENTS", "--workers", "2", "--no-progress", "--no-warm",
           "--cell-timeout", "6000", "--notebook-timeout", "6000"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=sigint_default)
    try:
        tree: set[int] = set()
        end = time.monotonic() + 600  # a guard against a hang, not a measured bound
        while time.monotonic() < end and p.poll() is None:
            tree = {p.pid, *(c.pid for c in psutil.Process(p.pid).children(recursive=True))}
            kernels = [q for q in tree if "ipykernel" in " ".join(_cmdline(q))]
            if len(kernels) >= 2:
                break
            time.sleep(0.5)
        assert p.poll() is None, p.communicate()
        ports = _listening(tree)
        assert len(ports) >= 3, ports  # the scheduler and two workers at least
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in ports), ports
        report, made = _probe(sorted({port for _, port in ports}))
        assert p.poll() is None, (report, p.communicate())  # the run was going on during the whole probe
        assert not made and not any(v.startswith("ran") for v in report.values()), report
    finally:
        out, err = ctrl_c(p, 600)
    assert p.returncode == 130, err


_LISTENERS = """
import json, psutil
from gmmcourse.grading.runners import local_cluster
with local_cluster(2) as (client, cluster):
    workers = client.scheduler_info()["workers"]
    comms = [cluster.scheduler_address, *workers, *(w["nanny"] for w in workers.values())]
    me = psutil.Process()
    listening = sorted({c.laddr.port for p in (me, *me.children(recursive=True))
                        for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN})
    print(json.dumps({"comms": comms, "listening": listening}))
"""


def test_local_cluster_listens_only_on_its_tls_ports():
    """The grader's local cluster (root's processes) listens on nothing but the scheduler's,
    the workers' and the nannies' mutually authenticated TLS ports: Dask's HTTP servers,
    started even without a dashboard (port 8787 and one per worker), are closed."""
    r = subprocess.run([sys.executable, "-c", _LISTENERS], env=_env(), capture_output=True, text=True,
                       timeout=600)  # a guard against a hang, not a measured bound
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got["comms"]) == 5 and all(a.startswith("tls://127.0.0.1:") for a in got["comms"]), got
    assert got["listening"] == sorted(int(a.rsplit(":", 1)[1]) for a in got["comms"]), got


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


# --------------------------------------------------------------------------- --scheduler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _autograde(course: Path, **kw):
    return autograde(["toy"], course, registry=toy.ASSIGNMENTS, limits=LIMITS, progress=False, warm_cache=False,
                     echo=lambda s: None, **kw)


def test_plain_tcp_scheduler_is_refused_without_trusted_network(tmp_path):
    course = toy.write_course(tmp_path, ["solution"])
    with pytest.raises(GradingError, match="refusing the unencrypted scheduler .* --trusted-network"):
        _autograde(course, scheduler=f"tcp://127.0.0.1:{_free_port()}")
    with pytest.raises(GradingError, match="is a TLS scheduler: give --tls-ca"):
        _autograde(course, scheduler=f"tls://127.0.0.1:{_free_port()}")
    r = subprocess.run([sys.executable, "-m", "gmmcourse.grading", "autograde", "toy", "--course", str(course),
                        "--registry", "toy:ASSIGNMENTS", "--scheduler", "tcp://127.0.0.1:1"],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "refusing the unencrypted scheduler" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_scheduler_with_nothing_listening_fails_at_once(tmp_path, monkeypatch):
    """Nothing listens at the address: one line saying so (the refused connection), not
    Dask's retrying until its connect timeout ("Timed out trying to connect")."""
    import dask

    course = toy.write_course(tmp_path, ["solution"])
    with dask.config.set({"distributed.comm.timeouts.connect": "20s"}):
        with pytest.raises(GradingError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:[0-9]+: Connection refused"):
            _autograde(course, scheduler=f"tcp://127.0.0.1:{_free_port()}", trusted_network=True, worker_wait=20)
