"""A Ctrl-C that arrives while a kernel is being stopped is passed on, not lost.

The fresh-clone CI run on a loaded machine found the grader finishing (exit 0) or grading on
for many minutes after SIGINT: `asyncio.run` turns Ctrl-C into the main task's cancellation,
and `stop()` swallowed it when it arrived during the kernel's shutdown. Now `stop()` finishes
stopping (every process killed, the manager closed) and then re-raises it."""

from __future__ import annotations

import asyncio

import pytest

from gmmcourse.grading import kernels


class _CGroup:
    def __init__(self):
        self.kills = 0

    def kill_all(self):
        self.kills += 1


class _Manager:
    def __init__(self):
        self.closed = False
        self.started = asyncio.Event()

    async def shutdown_kernel(self, now=False):
        self.started.set()
        await asyncio.sleep(60)  # a slow shutdown on a loaded machine

    def close_client_context(self):
        self.closed = True


def test_ctrl_c_during_stop_is_passed_on_after_stopping():
    session = object.__new__(kernels.SandboxedKernel)
    session.cgroup, session.watch, session.client, session.km = _CGroup(), None, None, _Manager()
    km = session.km

    async def main():
        task = asyncio.ensure_future(session.stop())
        await km.started.wait()
        task.cancel()  # what asyncio.run does with SIGINT
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert km.closed and session.cgroup.kills == 2 and session.km is None  # stopped all the same
