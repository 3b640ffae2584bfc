"""Whether eBPF can run on this node, and why not: the agent's decision at start-up, which
`kpod-otel check` reports by calling the same functions (so the two cannot disagree)."""

from __future__ import annotations

import importlib
from pathlib import Path

from kpod_otel.bpf.tracefs import TRACEFS_ROOTS

# CapEff bits (linux/capability.h)
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def effective_capabilities(proc_status_text: str) -> int:
    """The CapEff mask of a `/proc/<pid>/status` text (0 when absent)."""
    for line in proc_status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def bpf_permitted(proc_status_text: str) -> bool:
    """Loading and attaching the programs needs CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON."""
    caps = effective_capabilities(proc_status_text)
    return bool(caps >> CAP_SYS_ADMIN & 1) or bool(caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)


def bcc_import_error() -> str:
    """"" when bcc imports, else why not (bcc raises ImportError, or OSError when libbcc.so is missing)."""
    try:
        importlib.import_module("bcc")
    except (ImportError, OSError) as exc:
        return str(exc) or type(exc).__name__
    return ""


def unavailable_reason(*, enabled: bool, cgroup_root: str, cgroup2_root: Path | None, tracefs: Path | None,
                       proc_status_text: str) -> str:
    """Why eBPF cannot run at all on this node; "" when it can."""
    if not enabled:
        return "disabled by configuration (bpf.enabled: false)"
    if bcc_import_error():
        return "bcc is not installed (Debian package python3-bpfcc)"
    if not bpf_permitted(proc_status_text):
        return "BPF is not permitted (needs CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON)"
    if cgroup2_root is None:
        return (f"no cgroup v2 hierarchy under {cgroup_root} (pure cgroup v1 node): "
                "per-container eBPF attribution is unsupported")
    if tracefs is None:
        return f"tracefs is not mounted ({' or '.join(TRACEFS_ROOTS)})"
    return ""
