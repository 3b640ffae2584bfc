"""The few bpf(2) commands bcc 0.26 does not wrap: cgroup links and run-time statistics."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
_BPF_LINK_CREATE = 28
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0

# bpf_attach_type values (stable UAPI)
CGROUP_INET_INGRESS = 0
CGROUP_INET_EGRESS = 1
CGROUP_SOCK_OPS = 3


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    ret = int(_libc().syscall(_NR_BPF, cmd, attr, len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """Attach a cgroup program through a BPF link (kernel >= 5.7); returns the link fd.

    Unlike BPF_PROG_ATTACH, a link is detached by the kernel when its fd is closed, so a crashed or
    killed agent cannot leave a program attached to the node's root cgroup. Links always coexist with
    other programs on the same cgroup (like BPF_F_ALLOW_MULTI).
    """
    attr = ctypes.create_string_buffer(64)
    ctypes.memmove(attr, (ctypes.c_uint32 * 4)(prog_fd, target_fd, attach_type, 0), 16)
    return _bpf(_BPF_LINK_CREATE, attr)


def enable_run_time_stats() -> int:
    """Turn on the kernel's BPF run-time statistics while the returned fd stays open (node-wide)."""
    attr = ctypes.create_string_buffer(8)
    ctypes.memmove(attr, (ctypes.c_uint32 * 1)(_BPF_STATS_RUN_TIME), 4)
    return _bpf(_BPF_ENABLE_STATS, attr)
