"""Run a snippet of Python in a real grading sandbox (the kernel's argv, without the kernel)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from gmmcourse.grading.sandbox import CGroup, Limits, SandboxConfig, kernel_command, lifeline, make_scratch


def require_sandbox() -> None:
    """Fail (never skip) where the sandbox's tools or root are missing."""
    missing = [t for t in ("bwrap", "setpriv", "prlimit") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"the sandbox tests need {', '.join(missing)}: apt-get install -y bubblewrap util-linux")
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests need root (the grader mounts tmpfs scratches and sets cgroups)")


def sandbox_argv(code: str, cfg: SandboxConfig, limits: Limits, scratch: str, cgroup: CGroup) -> list[str]:
    """The kernel's argv (`kernel_command`), running ``python -c code`` instead of the kernel."""
    conn = os.path.join(scratch, "k1.json")
    with open(conn, "w") as f:
        f.write("{}")
    argv = kernel_command(cfg, limits, scratch, conn, cgroup)
    return argv[: argv.index("ipykernel_launcher") - 1] + ["-c", code]


def run_in_sandbox(code: str, cfg: SandboxConfig | None = None, limits: Limits | None = None,
                   cgroup: CGroup | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c code`` as the grader starts a kernel: same sandbox, same limits, same uid."""
    require_sandbox()
    cfg, limits = cfg or SandboxConfig(), limits or Limits()
    scratch = make_scratch(limits.scratch_bytes)
    own = cgroup is None
    cgroup = cgroup or CGroup(limits)
    try:
        argv = sandbox_argv(code, cfg, limits, scratch.path, cgroup)
        read_end, write_end = lifeline()  # open while it runs, as a worker holds it
        try:
            return subprocess.run(argv, stdin=read_end, capture_output=True, text=True, timeout=timeout)
        finally:
            os.close(read_end)
            os.close(write_end)
    finally:
        if own:
            cgroup.remove()
        scratch.remove()
