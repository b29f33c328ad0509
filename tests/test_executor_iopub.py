"""The IOPub channel that the sandboxed kernel re-makes (after an oversized output dropped the old
one, or after an interrupted cell) is used only once the kernel is heard on it: a
subscription that reaches the kernel late, as on a loaded machine, loses no output (issue 24).
Needs bubblewrap."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import nbformat
import pytest
from grading_helpers import LIMITS, needs_bwrap, toy

from gmmcourse.grading import channels, kernels
from gmmcourse.grading.verdicts import check_part
from gmmcourse.grading.executor import run_submission

pytestmark = needs_bwrap

LATE_S = 20.0
"""How late a re-made IOPub channel connects here: far longer than the executor ever waited
blindly (0.3 s, then a 5 s probe after an interrupt), so that an executor that does not check
readiness loses the next output."""

BIG = "from IPython.display import publish_display_data\npublish_display_data({'text/plain': 'x' * (17 << 20)})\n"
# The notebook's budget (wall-clock: wait_factor x notebook_timeout) must hold this test's own
# waits (the 30 s cell, LATE_S) and the honest rest (seconds): 600 s, far above both.
CASES = {
    # an oversized output drops the IOPub connection
    "drop": (BIG, "too large and was dropped", replace(LIMITS, notebook_timeout=600)),
    # a cell past its time limit is interrupted (the honest cells take milliseconds of 30 s)
    "interrupt": ("import time\ntime.sleep(100_000)", "exceeded the time limit",
                  replace(LIMITS, cell_timeout=30, notebook_timeout=600, wait_factor=1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_after_a_remade_iopub_channel_is_not_lost(monkeypatch, tmp_path, case):
    """The IOPub channel is re-made (after an oversized output, or after interrupting a cell);
    the next cell prints. The new channel connects LATE_S late: the print still reaches the
    notebook, and the answers count."""
    cell, event, limits = CASES[case]
    # the kernel is not given up on for being heard late (this test's own delay)
    monkeypatch.setattr(kernels, "READY_S", 600.0)
    real = channels.GuardedKernelClient._create_connected_socket
    made = []

    def late(self, channel, identity=None):
        if channel != "iopub" or not made:  # the first IOPub channel is the kernel's own
            sock = real(self, channel, identity)
        else:  # a re-made one: connected first to a socket nobody listens on, to the kernel later
            url = self._make_url(channel)
            self._make_url = lambda _: f"ipc://{tmp_path}/nobody"
            try:
                sock = real(self, channel, identity)
            finally:
                del self._make_url
            asyncio.get_running_loop().call_later(LATE_S, lambda: sock.closed or sock.connect(url))
        if channel == "iopub":
            made.append(sock)
        return sock

    monkeypatch.setattr(channels.GuardedKernelClient, "_create_connected_socket", late)
    nb = toy.notebook(extra_before=[cell, "print('seen after the new channel')"])
    res = run_submission(nbformat.writes(nb), [(p.grade_id, p.code) for p in toy.TOY.parts],
                         json.dumps(toy._inputs()), limits, None)
    assert len(made) == 2 and res["restarts"] == 0, (made, res["events"])  # re-made once, same kernel
    assert any(event in e for e in res["events"]), res["events"]
    printed = [o.get("text", "") for c in nbformat.reads(res["notebook"], 4).cells for o in c.get("outputs", [])]
    assert "seen after the new channel\n" in printed, printed
    ref = toy._reference()
    assert sum(check_part(p, res["answers"].get(p.grade_id), ref)[0] for p in toy.TOY.parts) == 5.0, res["answers"]
