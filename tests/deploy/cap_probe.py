"""Runs INSIDE the image root (deploy/image/chroot.sh run): tries each privileged operation the agent
performs and prints one JSON object {operation: "ok" | "<errno name>: <message>"}.

Usage: python cap_probe.py OTHER_UID_PID STATVFS_PATH CGROUP2_DIR
  OTHER_UID_PID: a process running as another user (its /host/proc/<pid>/ns/net is opened)
  STATVFS_PATH:  a directory below one that only its (other) owner may search
  CGROUP2_DIR:   an empty cgroup v2 directory to attach a cgroup_skb program to (and detach)
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
import time
from collections.abc import Callable

CLONE_NEWNET = 0x40000000


def _err(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def bpf_map() -> None:
    from bcc import BPF

    BPF(text="BPF_ARRAY(kpt_deploy_probe, u64, 1);")


def tracepoint() -> None:
    from bcc import BPF

    b = BPF(text="""
BPF_ARRAY(hits, u64, 1);
TRACEPOINT_PROBE(sched, sched_switch) {
    int k = 0;
    u64 *v = hits.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    return 0;
}
""")
    time.sleep(0.2)
    if b["hits"][0].value == 0:
        raise RuntimeError("attached but counted no sched_switch")
    b.cleanup()


def cgroup_skb(cgroup_dir: str) -> None:
    """Load an always-allow cgroup_skb program and attach it to a (test-made, empty) cgroup v2."""
    from bcc import BPF, BPFAttachType

    b = BPF(text="int kpt_allow(struct __sk_buff *skb) { return 1; }")
    fn = b.load_func("kpt_allow", BPF.CGROUP_SKB)
    fd = os.open(cgroup_dir, os.O_RDONLY)
    try:
        b.attach_func(fn, fd, BPFAttachType.CGROUP_INET_EGRESS)
        b.detach_func(fn, fd, BPFAttachType.CGROUP_INET_EGRESS)
    finally:
        os.close(fd)


def open_ns(pid: str) -> int:
    return os.open(f"/host/proc/{pid}/ns/net", os.O_RDONLY)


def setns(pid: str) -> None:
    fd = os.open("/host/proc/self/ns/net", os.O_RDONLY)  # our own netns: only the capability matters
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(fd)


def main() -> None:
    pid, path, cgroup_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    ops: dict[str, Callable[[], object]] = {
        "bpf_map": bpf_map,
        "tracepoint": tracepoint,
        "cgroup_skb": lambda: cgroup_skb(cgroup_dir),
        "open_other_users_netns": lambda: os.close(open_ns(pid)),
        "setns": lambda: setns(pid),
        "statvfs_other_users_volume": lambda: os.statvfs(path),
    }
    result: dict[str, str] = {}
    for name, op in ops.items():
        try:
            op()
            result[name] = "ok"
        except Exception as exc:
            result[name] = _err(exc)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
