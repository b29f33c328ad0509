"""The IOPub channel that the executor re-makes (after an oversized output dropped the old
one, or after an interrupted cell) is used only once the kernel is heard on it: a
subscription that reaches the kernel late, as on a loaded machine, loses no output (issue 24).
Needs bubblewrap."""

from __future__ import annotations

import asyncio
import json

import nbformat
from grading_helpers import LIMITS, needs_bwrap, toy

from gmmcourse.grading import channels
from gmmcourse.grading.engine import check_part
from gmmcourse.grading.executor import run_submission

pytestmark = needs_bwrap

LATE_S = 10.0
"""How late a re-made IOPub channel connects here: far longer than the executor ever waited
blindly (0.3 s), so that an executor that does not check readiness loses the next output."""


def test_output_after_a_remade_iopub_channel_is_not_lost(monkeypatch):
    """An oversized output drops the IOPub connection; the next cell prints. The new channel
    connects LATE_S late: the print still reaches the notebook, and the answers count."""
    real = channels.GuardedKernelClient._create_connected_socket
    made = []

    def late(self, channel, identity=None):
        sock = real(self, channel, identity)
        if channel == "iopub":
            made.append(sock)
            if len(made) > 1:  # the first channel is the kernel's own; later ones are re-made
                url = self._make_url(channel)
                sock.disconnect(url)
                asyncio.get_running_loop().call_later(LATE_S, lambda: sock.closed or sock.connect(url))
        return sock

    monkeypatch.setattr(channels.GuardedKernelClient, "_create_connected_socket", late)
    big = "from IPython.display import publish_display_data\npublish_display_data({'text/plain': 'x' * (17 << 20)})\n"
    nb = toy.notebook(extra_before=[big, "print('seen after the drop')"])
    res = run_submission(nbformat.writes(nb), [(p.grade_id, p.code) for p in toy.TOY.parts],
                         json.dumps(toy._inputs()), LIMITS, None)
    assert len(made) == 2, made  # the channel was re-made once, after the oversized output
    assert any("too large and was dropped" in e for e in res["events"]), res["events"]
    printed = [o.get("text", "") for c in nbformat.reads(res["notebook"], 4).cells for o in c.get("outputs", [])]
    assert "seen after the drop\n" in printed, printed
    ref = toy._reference()
    assert sum(check_part(p, res["answers"].get(p.grade_id), ref)[0] for p in toy.TOY.parts) == 5.0, res["answers"]
