"""Where submissions run: in this process (serial), on a local Dask cluster, or on a remote
Dask scheduler; and how all of it is stopped at once.

The local cluster listens on loopback only, speaks TLS with mutual authentication
(temporary credentials made for this run and held in memory only), and listens on nothing else
(no dashboard, no HTTP server):
another user of the machine cannot run code on its workers (they run as the grader, root).
A remote scheduler must be reached over TLS with the course's certificates, or a plain
``tcp://`` address is refused unless the caller says the network is trusted.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .cgroups import sigkill
from .sandbox import Limits
from .spec import GradingError, sanitize

__all__ = ["Task", "TLSFiles", "grade_task", "run_serial", "run_dask", "local_cluster", "check_scheduler",
           "remote_client", "stop_processes", "kill_tree", "cleanup_own", "die_with_parent", "dask_setup", "close_http",
           "skip_unused_iri_checker"]

log = logging.getLogger("gmmcourse.grading")

# Dask's HTTP routes (dashboard, Prometheus, JSON API): none is needed to grade.
_NO_HTTP = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}


@dataclass
class Task:
    """One submission to run: the arguments of `grade_task` and what the caller needs back."""

    key: str
    args: tuple
    payload: Any


@dataclass(frozen=True)
class TLSFiles:
    """The certificate files of a real cluster (docs/grading.md, "A real cluster")."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def grade_task(nb_text: str, exports, inputs_json: str, limits: Limits, cfg: dict) -> dict:
    """Run one submission in its sandbox (on a Dask worker, or here with ``--serial``), under
    ``limits`` (the `Limits` dataclass itself travels to the worker, pickled).

    Whatever goes wrong comes back as plain data (``{"infra_error": reason}``), never as an
    exception: an exception crossing from a worker must be pickled, and one that cannot be
    (a deep traceback, an unpicklable argument) would hang the run."""
    from . import executor

    try:
        return executor.run_submission(nb_text, exports, inputs_json, limits, cfg)
    except Exception as e:  # noqa: BLE001 (every failure of the run is reported as text)
        return {"infra_error": _reason(e)}


def _reason(e: BaseException) -> str:
    try:
        text = str(e)[:400]
    except Exception:  # noqa: BLE001 (a broken __str__)
        text = ""
    return f"{type(e).__name__}: {sanitize(text, 200)}"


# --------------------------------------------------------------------------- running


def run_serial(tasks: list[Task], done: Callable[[Task, dict | None, str | None], None]) -> None:
    for t in tasks:
        res = grade_task(*t.args)
        done(t, res, None)


def run_dask(client, tasks: list[Task], done: Callable[[Task, dict | None, str | None], None]) -> None:
    """Submit every task; record each as it finishes. A worker or scheduler that dies makes
    the pending ones infrastructure errors (`done` gets the reason), never a hang."""
    from distributed import as_completed

    futs = {client.submit(grade_task, *t.args, pure=False, key=t.key): t for t in tasks}
    for f in as_completed(futs, loop=client.loop):
        t = futs.pop(f)
        try:
            res, err = f.result(), None
        except Exception as e:  # noqa: BLE001 (a lost worker or scheduler: not a grade)
            res, err = None, _reason(e)
        f.release()
        done(t, res, err)


# --------------------------------------------------------------------------- clusters

_GRADER_PID = "GMG_GRADER_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` (the grader) dies, however it dies (``kill -9``
    of its pid alone, the OOM killer): a local worker never goes on grading with no one to
    stop it; its sandboxes follow it (bwrap ``--die-with-parent``). Already orphaned: exit."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the grader died before the line above
        os._exit(1)


def skip_unused_iri_checker() -> None:
    """Start this grader process without jsonschema's optional IRI format checker.

    jsonschema (under nbformat and nbgrader) loads ``rfc3987_syntax`` when it is installed,
    which compiles 38 lark grammars at import: about 2 s on a quiet machine, over 20 s on a
    loaded 2-core one, most of a no-change re-run. Nothing the grader validates has an IRI
    format, so its own processes (the CLI and local workers) go without it."""
    sys.modules.setdefault("rfc3987_syntax", None)  # `import` then raises ImportError


def close_http(server) -> None:
    """Close a Dask scheduler's or worker's HTTP listener. Dask starts one even without a
    dashboard (on port 8787, or any free one); with no routes (`_NO_HTTP`) it only answers
    404, but it is a plain, unauthenticated socket another user could reach: after this the
    only ports a local cluster listens on are its mutually authenticated TLS ones."""
    http = getattr(server, "http_server", None)
    if http is not None:
        http.stop()


def dask_setup(worker) -> None:
    """Dask's preload hook, run in each local worker process as it starts (`local_cluster`)."""
    close_http(worker)
    skip_unused_iri_checker()
    parent = os.environ.get(_GRADER_PID)
    if parent:
        die_with_parent(int(parent))




def _nanny_start_failed(record: logging.LogRecord) -> bool:
    """A log filter: drops asyncio's "Task exception was never retrieved" for a Dask nanny
    whose worker `local_cluster` killed while the cluster was starting (a Ctrl-C then); the
    grader has said in one line that it was interrupted."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (isinstance(exc, RuntimeError) and str(exc).startswith("Nanny failed to start"))


@contextmanager
def local_cluster(workers: int) -> Iterator[tuple[Any, Any]]:
    """A loopback-only LocalCluster with mutual TLS and temporary credentials (in memory),
    no dashboard, one single-threaded worker process per ``workers``, each killed by the
    kernel if this process dies (`dask_setup`). Yields (client, cluster); on the way out
    (Ctrl-C included) every worker and sandbox is killed first, then the cluster is closed."""
    import dask
    from distributed import Client, LocalCluster, Security
    from distributed.deploy.spec import SpecCluster

    sec = Security.temporary()  # a CA and key made now, never written to disk
    # The workers' own temporary files (the sandbox's seccomp program) go to a root-only
    # folder of this run, removed at the end even when a worker was killed.
    # Named by this process (gmg-<pid>-run-*), so a run killed with SIGKILL leaves nothing for
    # long: the next grader removes it (`wipe.cleanup_stale_scratch`).
    tmp = tempfile.mkdtemp(prefix=f"gmg-{os.getpid()}-run-")
    os.chmod(tmp, 0o700)
    cluster = client = None
    try:
        with dask.config.set(_NO_HTTP):
            before = set(SpecCluster._instances)
            try:
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tls://",
                    security=sec, dashboard_address=None, worker_dashboard_address=None,
                    silence_logs=logging.ERROR, memory_limit=0, env={"TMPDIR": tmp, _GRADER_PID: str(os.getpid())},
                    preload=[__name__],  # `dask_setup`: the workers die with this process
                )
            except BaseException:  # Ctrl-C while it starts: stop the half-made cluster's workers here
                for half in set(SpecCluster._instances) - before:
                    stop_processes(half)
                    # Dask's atexit hook would close it and fail ("AssertionError: Status.init",
                    # a traceback after the grader's own one-line message)
                    half.shutdown_on_close = False
                logging.getLogger("asyncio").addFilter(_nanny_start_failed)
                raise
            close_http(cluster.scheduler)
            client = Client(cluster, security=sec)
        yield client, cluster
    finally:
        stop_processes(cluster)
        for closing in (client, cluster):
            if closing is not None:
                try:
                    closing.close(timeout=5)
                except Exception:  # noqa: BLE001 (already dead)
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


def _security(tls: TLSFiles):
    from distributed import Security

    given = [tls.ca, tls.cert, tls.key]
    if any(given) and not all(given):
        raise GradingError("--tls-ca, --tls-cert and --tls-key go together: give all three")
    for f in given:
        if f and not Path(f).is_file():
            raise GradingError(f"TLS file {f} does not exist")
    if all(given):
        return Security(tls_ca_file=tls.ca, tls_client_cert=tls.cert, tls_client_key=tls.key, require_encryption=True)
    return Security()  # from Dask's configuration (distributed.comm.tls.*), if any


def _reachable(address: str) -> None:
    """Fail at once when nothing listens at the scheduler's address (Dask would retry for
    its whole connect timeout)."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    scheme, loc = parse_address(address)
    if scheme not in ("tcp", "tls"):
        raise GradingError(f"unsupported scheduler address {address!r}: use tls://HOST:PORT")
    try:
        host, port = parse_host_port(loc)
    except ValueError:
        raise GradingError(f"the scheduler address {address!r} needs a port, e.g. tls://HOST:8786") from None
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        raise GradingError(f"cannot reach the Dask scheduler at {address}: {e.strerror or e}") from None


def check_scheduler(address: str, tls: TLSFiles, *, trusted_network: bool):
    """The `distributed.Security` for ``address``, or a one-line `GradingError`: a TLS
    scheduler needs certificates, a plain ``tcp://`` one ``trusted_network``, and something
    must listen there."""
    sec = _security(tls)
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme == "tls" and not sec.tls_ca_file:
        raise GradingError(f"{address} is a TLS scheduler: give --tls-ca, --tls-cert and --tls-key "
                           "(docs/grading.md, \"A real cluster\")")
    if scheme != "tls" and not trusted_network:
        raise GradingError(f"refusing the unencrypted scheduler {address}: anyone who can reach it runs code as "
                           "its workers; use tls:// with --tls-ca/--tls-cert/--tls-key, or --trusted-network "
                           "if only the grading machines can reach it")
    _reachable(address)
    return sec


@contextmanager
def remote_client(address: str, tls: TLSFiles, *, trusted_network: bool, worker_wait: float,
                  echo: Callable[[str], None]) -> Iterator[Any]:
    """A client of a running scheduler: TLS with the given (or configured) certificates;
    plain ``tcp://`` only with ``trusted_network``."""
    from distributed import Client

    sec = check_scheduler(address, tls, trusted_network=trusted_network)
    try:
        client = Client(address, security=sec, timeout=f"{max(1, int(worker_wait))}s")
    except (OSError, TimeoutError) as e:
        raise GradingError(f"cannot reach the Dask scheduler at {address}: {sanitize(str(e), 200)}") from None
    try:
        if not client.scheduler_info().get("workers"):
            echo(f"waiting up to {worker_wait:.0f} s for Dask workers at {address} ...")
            try:
                client.wait_for_workers(1, timeout=worker_wait)
            except (TimeoutError, OSError):
                raise GradingError(
                    f"no Dask worker joined the scheduler at {address} within {worker_wait:.0f} s; start "
                    f"workers with `dask worker {address} --nthreads 1` (or use --worker-wait)") from None
        yield client
    finally:
        try:
            client.close(timeout=5)
        except Exception:  # noqa: BLE001 (scheduler gone)
            pass


# --------------------------------------------------------------------------- stopping


def _cgroup_dirs(owners: set[int]) -> list[Path]:
    """The per-submission cgroups (``gmmgrade-<owner>-*``, any hierarchy) of ``owners``."""
    from . import cgroups as cg

    try:
        bases = cg.parent_dirs()
    except Exception:  # noqa: BLE001 (no cgroups here: nothing to find)
        return []
    out = []
    for base in bases:
        for d in base.glob("gmmgrade-*"):
            try:
                if int(d.name.split("-")[1]) in owners:
                    out.append(d)
            except (IndexError, ValueError):
                continue
    return out


def _our_cgroup_pids(owners: set[int]) -> set[int]:
    """The processes in the per-submission cgroups of ``owners``."""
    out: set[int] = set()
    for d in _cgroup_dirs(owners):
        try:
            out |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            continue
    return out


def kill_tree(roots: set[int]) -> None:
    """SIGKILL ``roots``, all their descendants and everything in their per-submission
    cgroups, repeatedly until none is left (a fork racing the kill is caught next round)."""
    import psutil

    owners = set(roots)

    def victims() -> set[int]:
        found: set[int] = set()
        for r in list(owners):
            try:
                kids = psutil.Process(r).children(recursive=True)
            except psutil.Error:
                continue
            found |= {k.pid for k in kids}
        owners.update(found)
        return found | _our_cgroup_pids(owners) | set(roots)

    sigkill(victims)


def stop_processes(cluster=None) -> None:
    """Kill everything this grader started: sandboxes of this process and, for a local
    cluster, its workers with their sandboxes (the nannies are told first not to restart
    them). Clean-up and waiting come after, when nothing runs any more."""
    workers: set[int] = set()
    for nanny in (getattr(cluster, "workers", None) or {}).values():
        try:
            nanny.close_gracefully()  # a worker that dies now is not restarted
        except Exception:  # noqa: BLE001
            pass
        pid = getattr(nanny, "pid", None)
        if pid:
            workers.add(pid)
    kill_tree(workers)
    _kill_own_cgroups()


def _kill_own_cgroups() -> None:
    """This process's own sandboxes (``--serial``, the cache warm-up): its cgroups' members."""
    sigkill(lambda: _our_cgroup_pids({os.getpid()}))


def cleanup_own() -> None:
    """At the end of a run (nothing of it runs any more): remove this process's own
    per-submission cgroups and scratch folders that an interrupted sandbox left."""
    from .sandbox import remove_scratch

    _kill_own_cgroups()
    for d in _cgroup_dirs({os.getpid()}):
        try:
            d.rmdir()
        except OSError as e:
            log.warning("cannot remove the cgroup %s: %s", d, e.strerror)
    for d in Path("/tmp").glob(f"gmg-{os.getpid()}-*"):
        remove_scratch(d)
