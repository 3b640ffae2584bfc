"""`kpod-otel check`: what this node offers the agent, as a table; non-zero exit on fatal problems."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from kpod_otel.config import Config, DiscoveryMode
from kpod_otel.export.otlp_settings import Protocol, SettingsError, settings_from_env


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str


# Capabilities the agent uses, by bit number (linux/capability.h), and what for.
CAPABILITIES: dict[int, tuple[str, str]] = {
    39: ("CAP_BPF", "load BPF programs and create maps"),
    38: ("CAP_PERFMON", "attach tracepoints and perf events"),
    21: ("CAP_SYS_ADMIN", "attach cgroup programs; enter network namespaces (setns)"),
    19: ("CAP_SYS_PTRACE", "read /proc/<pid>/ns/net and mountinfo of other processes"),
    24: ("CAP_SYS_RESOURCE", "raise RLIMIT_MEMLOCK for BPF maps on older kernels"),
    2: ("CAP_DAC_READ_SEARCH", "read cgroup and proc files owned by others"),
}


def _effective_caps(proc_self_status: str) -> int:
    for line in proc_self_status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_kernel() -> CheckResult:
    return CheckResult("kernel", Status.OK, platform.release())


def check_btf(sys_root: str) -> CheckResult:
    for base in (sys_root, "/sys"):
        if Path(base, "kernel/btf/vmlinux").exists():
            return CheckResult("BTF", Status.OK, f"{base}/kernel/btf/vmlinux")
    return CheckResult("BTF", Status.WARN, "no /sys/kernel/btf/vmlinux (not needed: programs use tracepoints)")


def check_bcc(bpf_enabled: bool) -> CheckResult:
    if not bpf_enabled:
        return CheckResult("bcc", Status.OK, "eBPF disabled by config (bpf.enabled: false)")
    try:
        import bcc
    except ImportError as exc:
        return CheckResult("bcc", Status.WARN, f"not importable ({exc}): eBPF metrics off, cgroup metrics only")
    return CheckResult("bcc", Status.OK, f"importable from {Path(bcc.__file__).parent}")


def check_headers() -> CheckResult:
    build = Path("/lib/modules", platform.release(), "build")
    if (build / "include").is_dir():
        return CheckResult("kernel headers", Status.OK, f"{build} -> {build.resolve()}")
    return CheckResult(
        "kernel headers", Status.WARN,
        f"{build} missing: bcc cannot compile; mount the host's /lib/modules and /usr/src read-only",
    )


def check_tracefs(sys_root: str) -> CheckResult:
    for base in (f"{sys_root}/kernel/tracing", "/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if Path(base, "events").is_dir():
            return CheckResult("tracefs", Status.OK, base)
    return CheckResult("tracefs", Status.WARN, "not mounted: tracepoint programs cannot attach")


def check_cgroup(root: str) -> CheckResult:
    base = Path(root)
    if not base.is_dir():
        return CheckResult("cgroup", Status.FAIL, f"{root} does not exist (config cgroup.root)")
    if (base / "cgroup.controllers").exists():
        return CheckResult("cgroup", Status.OK, f"v2 (unified) at {root}")
    v1 = sorted(p.name for p in base.iterdir() if (p / "cgroup.procs").exists() and p.name != "unified")
    if (base / "unified" / "cgroup.procs").exists():
        return CheckResult("cgroup", Status.OK, f"hybrid: v1 {','.join(v1)} + v2 at {root}/unified")
    if v1:
        return CheckResult("cgroup", Status.WARN, f"v1 only ({','.join(v1)}): eBPF attribution unsupported")
    return CheckResult("cgroup", Status.FAIL, f"no cgroup hierarchy under {root}")


def check_proc(proc_root: str) -> CheckResult:
    if Path(proc_root, "1", "cgroup").exists():
        return CheckResult("proc", Status.OK, proc_root)
    return CheckResult("proc", Status.FAIL, f"{proc_root}/1/cgroup not readable (config cgroup.proc-root; hostPID?)")


def check_capabilities(status_text: str) -> CheckResult:
    caps = _effective_caps(status_text)
    missing = [f"{name} ({why})" for bit, (name, why) in CAPABILITIES.items() if not caps >> bit & 1]
    if not missing:
        return CheckResult("capabilities", Status.OK, "all needed capabilities are effective")
    return CheckResult("capabilities", Status.WARN, "missing: " + "; ".join(missing))


def _tcp_reachable(host: str, port: int, timeout: float = 2.0) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc)


def check_discovery(config: Config) -> CheckResult:
    mode = config.discovery.mode
    if mode is DiscoveryMode.LOCAL:
        return CheckResult("discovery", Status.OK, "local: pods from the cgroup tree")
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if mode is DiscoveryMode.KUBELET:
        host, port = config.discovery.node_ip or None, str(config.discovery.kubelet_port)
    if config.discovery.kubeconfig and mode is not DiscoveryMode.KUBELET:
        return CheckResult("discovery", Status.OK, f"{mode.value}: kubeconfig {config.discovery.kubeconfig}")
    if not host:
        status = Status.FAIL if mode is not DiscoveryMode.AUTO else Status.WARN
        return CheckResult("discovery", status, f"{mode.value}: no API server / node IP known "
                           "(not in a cluster? use discovery.mode: local)")
    err = _tcp_reachable(host, int(port))
    if err:
        status = Status.WARN if mode is DiscoveryMode.AUTO else Status.FAIL
        return CheckResult("discovery", status, f"{mode.value}: {host}:{port} unreachable ({err})")
    return CheckResult("discovery", Status.OK, f"{mode.value}: {host}:{port} reachable")


def check_exporter(env: dict[str, str]) -> CheckResult:
    try:
        s = settings_from_env(env)
    except SettingsError as exc:
        return CheckResult("OTLP exporter", Status.FAIL, str(exc))
    if s.protocol is Protocol.HTTP_PROTOBUF:
        parts = urlsplit(s.endpoint)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    else:
        host, _, port_s = s.endpoint.rpartition(":")
        host, port = host.strip("[]"), int(port_s)
    err = _tcp_reachable(host, port)
    if err:
        return CheckResult("OTLP exporter", Status.WARN, f"{s.describe()}: unreachable now ({err})")
    return CheckResult("OTLP exporter", Status.OK, f"{s.describe()}: reachable")


def collect_checks(config: Config) -> list[CheckResult]:
    status_text = Path("/proc/self/status").read_text()
    checks: list[Callable[[], CheckResult]] = [
        check_kernel,
        lambda: check_btf(config.cgroup.sys_root),
        lambda: check_bcc(config.bpf.enabled),
        check_headers,
        lambda: check_tracefs(config.cgroup.sys_root),
        lambda: check_cgroup(config.cgroup.root),
        lambda: check_proc(config.cgroup.proc_root),
        lambda: check_capabilities(status_text),
        lambda: check_discovery(config),
        lambda: check_exporter(dict(os.environ)),
    ]
    return [c() for c in checks]


def render(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'CHECK'.ljust(width)}  STATUS  DETAIL"]
    lines += [f"{r.name.ljust(width)}  {r.status.value.ljust(6)}  {r.detail}" for r in results]
    return "\n".join(lines)


def run_checks(config: Config, out: TextIO) -> int:
    results = collect_checks(config)
    out.write(render(results) + "\n")
    return 1 if any(r.status is Status.FAIL for r in results) else 0
