"""Run one submission: student cells in a sandboxed kernel, then the trusted exports.

This module runs on a grading worker (trusted, outside the sandbox). It receives plain data
(notebook text, export sources, inputs) and returns plain data (executed notebook, exported
answers as JSON *text*, events). It never decides a verdict: the parent parses and checks the
answers. The kernel itself (channels, output budget, interrupt, stop) is
`gmmcourse.grading.kernels`; the code sent into it and the reading of what comes back is
`gmmcourse.grading.protocol`.

Export channel: after the student's cells, the worker first clears the kernel's execution
hooks (`protocol.quiesce_expressions`: no transformer sees the request, nothing it uses can be
shadowed, and the exports fail closed unless the kernel then reports no hook left), then, for
each part, sends a fresh execute_request whose code wraps ``Part.export``
(`protocol.export_code`) and publishes the answer as a display_data message tagged with a
random nonce generated now (`protocol.new_nonce`). Only outputs of that very request are read,
and exactly one tagged output must arrive: a second one (a forged answer next to the real one)
fails the part. The wrapper runs the export in a fresh namespace with the real builtins (a
student's ``float = ...`` or ``exec = ...`` cannot change it). An exception comes back as its
class name only, and reaches feedback as a fixed sentence (`protocol.read_export`): nothing
the student's code wrote from the hidden inputs.

The kernel is untrusted code all the same: a student who patches modules can publish
whatever they like. That is why exports carry raw data only (values, draws, function
outputs on inputs sent now) and every statistic is computed by the trusted checks.

A kernel that dies, sends an oversized message or garbles the protocol is restarted and the
earlier cells replayed (at most ``Limits.max_restarts`` times); the returned notebook is
capped at ``Limits.notebook_bytes``.

Time (`gmmcourse.grading.clock`): the limits count the CPU time of the submission's cgroup, so
the grader's load never decides a grade, and each also bounds wall-clock time at
``wait_factor`` times itself (waiting costs no CPU). One budget per submission:
``notebook_timeout`` for the student's cells, ``grace_timeout`` for everything after (exports,
restarts, replays); ``cell_timeout`` per cell, ``export_timeout`` per export. A cell that runs
past its limit is interrupted (SIGINT), so the kernel and everything computed so far survive;
only a kernel that ignores the interrupt is restarted and the earlier cells replayed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nbformat

from gmmcourse.course import SETUP_TAG

from . import protocol
from .clock import Clock
from .kernels import KernelStartError, SandboxedKernel
from .outputs import BudgetedClient
from .protocol import EXPORT_MIME
from .sandbox import CGroup, Limits, SandboxConfig, cleanup_stale_scratch, make_scratch
from .spec import sanitize

__all__ = ["run_submission", "EXPORT_MIME", "KernelStartError", "sanitize", "SETUP_TAG"]


def _why(kind: str, limits: Limits, cgroup: CGroup, oom_before: int, waited: bool = False) -> str:
    if kind == "timeout":
        if cgroup.pids_hit():
            return f"it exceeded the time limit (and tried to start more than {limits.max_pids} processes or threads)"
        if waited:  # the wall-clock bound, not the CPU seconds
            return (f"it exceeded the time limit: it ran for {limits.wait_factor:g} x its limit in wall-clock time "
                    f"(at most {limits.wait_factor * limits.cell_timeout:.0f} s per cell) without using up its "
                    f"{limits.cell_timeout:.0f} s of CPU time, waiting rather than computing")
        return f"it exceeded the time limit ({limits.cell_timeout:.0f} s of CPU time per cell)"
    if cgroup.oom_events() > oom_before:
        return f"it exceeded the memory limit ({limits.memory_bytes >> 20} MiB)"
    if kind == "garbled":
        return "the kernel sent invalid messages (was the notebook tampering with Jupyter?)"
    if kind == "oversized":
        return (f"it sent the autograder a message over the size limit ({limits.max_message_bytes >> 20} MiB for "
                "outputs and replies, less on the other channels) or broke its connection to the autograder")
    if cgroup.pids_hit():
        return f"it started too many processes or threads (limit {limits.max_pids})"
    return "the Python kernel died (e.g. os._exit, a crash or the memory limit)"


def _read_export(client: BudgetedClient, nonce: str, limits: Limits) -> dict:
    """The trusted reading of one export (`protocol.read_export`: fixed failure texts)."""
    return protocol.read_export(client.export_count, client.export_payloads, nonce, limits.export_bytes)


def _cap_notebook(nb, limit: int) -> bool:
    """Drop outputs (largest first) until the serialised notebook is under `limit` bytes."""
    size = len(nbformat.writes(nb))
    if size <= limit:
        return False
    outs = []
    for c in nb.cells:
        for i, o in enumerate(c.get("outputs", [])):
            outs.append((len(json.dumps(o, default=str)), c, o))
    outs.sort(key=lambda t: -t[0])
    note = nbformat.v4.new_output("stream", name="stderr", text="[autograder: output removed (notebook size limit)]\n")
    for n, c, o in outs:
        if size <= limit:
            break
        c.outputs = [x if x is not o else note for x in c.outputs]
        size -= n
    if len(nbformat.writes(nb)) > limit:  # sources alone too large: keep no outputs at all
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs = []
    return True


async def _grade(nb, exports, inputs_json, limits, cfg, scratch, cgroup) -> dict[str, Any]:
    events: list[str] = []
    answers: dict[str, dict] = {}
    # The set-up cell of the published notebooks (tag "gmmcourse-setup") installs packages
    # outside the grader; in the sandbox (no network) it is not run.
    code = [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and SETUP_TAG not in (c.get("metadata", {}).get("tags") or [])]
    for i in code:
        nb.cells[i].outputs = []
        nb.cells[i].execution_count = None
    sess = SandboxedKernel(nb, limits, cfg, scratch, cgroup)
    clock = Clock(cgroup.cpu_seconds, limits.wait_factor)
    deadline = limits.notebook_timeout  # charged seconds for the student's cells
    final = deadline + limits.grace_timeout  # everything, exports and restarts included
    skipped: set[int] = set()
    restarts = 0
    alive = False
    cells_s = 0.0
    infra: str | None = None

    def left(until: float):
        """What remains of the submission's budget up to `until` (an `Allowance`)."""
        return clock.left(until)

    def within(limit: float, until: float):
        """A request's own `limit`, cut to what remains of the budget up to `until`."""
        return clock.allowance(limit).at_most(left(until))

    def mark(idx: int, text: str) -> None:
        nb.cells[idx].outputs.append(
            nbformat.v4.new_output("stream", name="stderr", text=f"[autograder: {text}]\n")
        )

    async def restart(upto: int) -> bool:
        """New kernel; replay code cells before ``upto`` (skipping failed ones)."""
        nonlocal restarts, alive, infra
        while True:
            await sess.stop()
            alive = False
            if restarts >= limits.max_restarts:
                events.append("Too many kernel restarts; the remaining cells were not run.")
                return False
            rest = left(final)
            if rest.spent or rest.wall <= 1:
                events.append("The time budget of the submission was used up; the kernel was not restarted.")
                return False
            restarts += 1
            try:
                await sess.start(left(final).wall)
            except KernelStartError as e:
                infra = f"the kernel could not be restarted ({e})"
                return False
            alive = True
            ok = True
            for j in code:
                if j >= upto:
                    break
                if j in skipped:
                    continue
                replay = nbformat.from_dict(dict(nb.cells[j]))
                if left(final).spent:
                    events.append("The time budget was used up while re-running cells after a restart.")
                    return True
                oom0 = cgroup.oom_events()
                bad = await sess.run_extra(replay, within(limits.cell_timeout, final))
                if bad:
                    skipped.add(j)
                    events.append(
                        f"Cell {j + 1} failed when re-run after a restart ({_why(bad, limits, cgroup, oom0, waited=sess.last_timeout == "wall")}); skipped."
                    )
                    ok = False
                    break
            if ok:
                return True

    async def recover(kind: str, upto: int) -> bool:
        """After a timeout: interrupt (keeps the kernel's state); otherwise restart."""
        if kind == "timeout" and await sess.interrupt():
            return True
        return await restart(upto)

    try:
        try:
            await sess.start()
            alive = True
        except KernelStartError as e:
            infra = f"the kernel could not be started ({e})"
        pos = 0
        while alive and pos < len(code):
            idx = code[pos]
            if left(deadline).spent:
                rest = [str(j + 1) for j in code[pos:]]
                events.append(
                    f"The notebook time limit ({limits.notebook_timeout:.0f} s of CPU time) was reached; "
                    f"cells {', '.join(rest)} were not run."
                )
                for j in code[pos:]:
                    skipped.add(j)
                    mark(j, f"not run: notebook time limit ({limits.notebook_timeout:.0f} s of CPU time) reached")
                break
            oom0 = cgroup.oom_events()
            tc = clock.wall()
            room = left(deadline)
            bad = await sess.run(nb.cells[idx], idx, within(limits.cell_timeout, deadline))
            cells_s += clock.wall() - tc
            if bad:
                why = _why(bad, limits, cgroup, oom0, waited=sess.last_timeout == "wall")
                per_cell = clock.allowance(limits.cell_timeout)
                if bad == "timeout" and room.at_most(per_cell) != per_cell:  # cut short by the notebook's budget
                    why = f"the notebook time limit ({limits.notebook_timeout:.0f} s of CPU time) was reached"
                events.append(f"Cell {idx + 1} was stopped: {why}. It was skipped; grading continued.")
                mark(idx, f"cell stopped: {why}")
                skipped.add(idx)
                alive = await recover(bad, idx)
            pos += 1

        # Exports: trusted code sent now, read back only from its own execution.
        quiet_kernel = 0  # the kernel (by start count) whose hooks were last cleared
        quiet = False
        for grade_id, src in exports:
            if infra is not None:
                break
            if not alive:
                answers[grade_id] = {"ok": False, "error": "the notebook's kernel was not running"}
                continue
            if quiet_kernel != sess.n:
                # Clear hooks the student's cells installed (they would see the export code);
                # again after a restart, whose replay ran the student's cells once more.
                quiet = await sess.quiesce(min(30.0, max(1.0, left(final).wall)))
                quiet_kernel = sess.n
            if not quiet:
                answers[grade_id] = {"ok": False, "error": protocol.NOT_QUIET}
                continue
            room = within(limits.export_timeout, final)
            if room.spent:
                answers[grade_id] = {"ok": False, "error": "the submission's time budget was used up before this part"}
                continue
            nonce = protocol.new_nonce()
            cell = nbformat.v4.new_code_cell(protocol.export_code(src, inputs_json, nonce))
            oom0 = cgroup.oom_events()
            bad = await sess.run_extra(cell, room, mode="export")
            if bad:
                answers[grade_id] = {"ok": False, "error": f"exporting the answer failed: {_why(bad, limits, cgroup, oom0)}"}
                alive = await recover(bad, len(nb.cells))
                continue
            answers[grade_id] = _read_export(sess.client, nonce, limits)
    finally:
        await sess.stop()
    if sess.dropped_messages:
        events.append("Some output was too large and was dropped (it is not needed for grading).")
    if _cap_notebook(nb, limits.notebook_bytes):
        events.append(f"Outputs were removed: the notebook exceeded {limits.notebook_bytes >> 20} MiB.")
    return {
        "events": events,
        "answers": answers,
        "infra_error": infra,
        "restarts": max(0, restarts),
        "cells_s": cells_s,
        "cpu_s": clock.charged(),
        "duration": clock.wall(),
    }


_HOST_CLEANED = False


def run_submission(
    nb_text: str,
    exports: list[tuple[str, str]],
    inputs_json: str,
    limits: Limits | dict | None = None,
    cfg: SandboxConfig | dict | None = None,
) -> dict[str, Any]:
    """Grade-side execution of one submission (runs on a worker; returns plain data).

    Returns ``{"notebook": executed notebook JSON text, "events": [...], "answers":
    {grade_id: {"ok": bool, "json"|"error": str}}, "infra_error": None or str, "duration": s}``.
    ``infra_error`` set means the grading infrastructure failed (the kernel could not be
    started): the result is not a grade and the submission must be retried.
    """
    global _HOST_CLEANED
    if not _HOST_CLEANED:  # a worker cleans its own host: what killed graders/workers left
        _HOST_CLEANED = True
        CGroup.cleanup_stale()
        cleanup_stale_scratch()
    limits = Limits(**limits) if isinstance(limits, dict) else (limits or Limits())
    if isinstance(cfg, dict):
        cfg = SandboxConfig(**{**cfg, "hide": tuple(cfg.get("hide", ()))})
    cfg = cfg or SandboxConfig()
    nb = nbformat.reads(nb_text, as_version=4)
    cgroup = CGroup(limits)  # first: it refuses (LimitUnavailable) where a limit cannot be applied
    scratch = make_scratch(limits.scratch_bytes)
    try:
        res = asyncio.run(_grade(nb, exports, inputs_json, limits, cfg, scratch.path, cgroup))
    finally:
        cgroup.remove()
        scratch.remove()
    res["notebook"] = nbformat.writes(nb)
    res["cgroup"] = bool(cgroup.name)
    res["scratch_tmpfs"] = scratch.mounted
    return res
