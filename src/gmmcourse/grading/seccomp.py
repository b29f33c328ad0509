"""The sandbox's seccomp program: the kernel keyring syscalls fail with EPERM.

Kernel keyrings are per host uid, so a sandbox could otherwise leave keys behind for the next
student. The program lives in a sealed memfd of the grader's process (`filter_fd`), never in
a file: a grader that is killed leaves nothing behind. bwrap reads it from fd 9, which the
sandbox's launcher opens as ``/proc/<grader pid>/fd/<memfd>`` (`filter_path`).
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import threading

__all__ = ["seccomp_filter", "filter_fd", "filter_path"]

# AUDIT_ARCH_*: (add_key, request_key, keyctl); numbers from the kernel's syscall tables.
_DENIED = {
    0xC000003E: (248, 249, 250),  # x86_64 (x32 variants are these | 0x40000000)
    0x40000003: (286, 287, 288),  # i386
    0xC00000B7: (217, 218, 219),  # aarch64
}
_X32 = 0x40000000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_RET_ALLOW, _RET_EPERM, _RET_KILL = 0x7FFF0000, 0x00050000 | 1, 0x80000000


def seccomp_filter() -> bytes:
    """A classic-BPF seccomp program (as bwrap's ``--seccomp FD`` reads it) that makes the
    keyring syscalls fail with EPERM, allows everything else, and kills a process that
    uses an architecture the table does not know (fail closed)."""
    prog: list[tuple[int, int, int, int]] = []
    for arch, nrs in _DENIED.items():
        nrs = nrs + tuple(n | _X32 for n in nrs) if arch == 0xC000003E else nrs
        body = [(_BPF_LD_W_ABS, 0, 0, 0)]  # seccomp_data.nr
        for i, nr in enumerate(nrs):
            # jump to the EPERM return (after the remaining jeqs and the ALLOW)
            body.append((_BPF_JEQ_K, len(nrs) - i, 0, nr))
        body += [(_BPF_RET_K, 0, 0, _RET_ALLOW), (_BPF_RET_K, 0, 0, _RET_EPERM)]
        prog += [(_BPF_LD_W_ABS, 0, 0, 4), (_BPF_JEQ_K, 0, len(body), arch)] + body  # seccomp_data.arch
    prog.append((_BPF_RET_K, 0, 0, _RET_KILL))
    order = "<" if sys.byteorder == "little" else ">"  # the kernel reads it in native order
    return b"".join(struct.pack(order + "HBBI", *ins) for ins in prog)


_FD: int | None = None
_FD_PID: int | None = None
_LOCK = threading.Lock()


def filter_fd() -> int:
    """This process's sealed memfd holding `seccomp_filter()` (made once per process)."""
    global _FD, _FD_PID
    with _LOCK:
        if _FD is None or _FD_PID != os.getpid():  # a forked worker makes its own
            fd = os.memfd_create("gmg-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.write(fd, seccomp_filter())
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
                        | fcntl.F_SEAL_SEAL)
            _FD, _FD_PID = fd, os.getpid()
        return _FD


def filter_path() -> str:
    """A path any child of this process opens to read the program from its start."""
    return f"/proc/{os.getpid()}/fd/{filter_fd()}"
