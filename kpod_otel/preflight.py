"""`kpod-otel check`: what this node offers the agent, as a table; non-zero exit on fatal problems.

Every availability check calls the function `run` uses to decide (`kpod_otel.bpf.support`, the tracefs
lookup, the cgroup layout from the mount table, the assembly's eBPF environment), so the two never disagree.
"""

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

from kpod_otel.bpf.kernel import KERNEL_BPF_CMPXCHG, too_old
from kpod_otel.bpf.program import BpfEnvironment
from kpod_otel.bpf.support import CAP_SYS_ADMIN, bcc_import_error, bpf_permitted, effective_capabilities
from kpod_otel.bpf.tracefs import TRACEFS_ROOTS, find_tracefs
from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion
from kpod_otel.config import Config, ConfigError, DiscoveryMode
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
    error = bcc_import_error()
    if error:
        return CheckResult("bcc", Status.WARN, f"not importable ({error}): eBPF metrics off, cgroup metrics only")
    return CheckResult("bcc", Status.OK, "importable")


def check_headers() -> CheckResult:
    build = Path("/lib/modules", platform.release(), "build")
    if (build / "include").is_dir():
        return CheckResult("kernel headers", Status.OK, f"{build} -> {build.resolve()}")
    return CheckResult(
        "kernel headers", Status.WARN,
        f"{build} missing: bcc cannot compile; mount the host's /lib/modules and /usr/src read-only",
    )


def check_tracefs() -> CheckResult:
    tracefs = find_tracefs()
    if tracefs is not None:
        return CheckResult("tracefs", Status.OK, str(tracefs))
    return CheckResult("tracefs", Status.WARN, f"not mounted at {' or '.join(TRACEFS_ROOTS)}: "
                       "tracepoint programs cannot attach")


def check_cgroup(fs: CgroupFS | None, problem: str) -> CheckResult:
    """The layout the agent detects (from the mount table, as `run` does)."""
    if fs is None:
        return CheckResult("cgroup", Status.FAIL, problem)
    layout = fs.layout
    v1 = ",".join(sorted(layout.v1_controllers))
    if layout.version is CgroupVersion.V2:
        return CheckResult("cgroup", Status.OK, f"v2 (unified) at {layout.v2_dir}")
    if layout.version is CgroupVersion.HYBRID:
        return CheckResult("cgroup", Status.OK, f"hybrid: v1 {v1} + v2 at {layout.v2_dir}")
    return CheckResult("cgroup", Status.WARN, f"v1 only ({v1}): eBPF attribution unsupported")


def check_proc(proc_root: str) -> CheckResult:
    if Path(proc_root, "1", "cgroup").exists():
        return CheckResult("proc", Status.OK, proc_root)
    return CheckResult("proc", Status.FAIL, f"{proc_root}/1/cgroup not readable (config cgroup.proc-root; hostPID?)")


def check_capabilities(status_text: str) -> CheckResult:
    caps = effective_capabilities(status_text)
    if not bpf_permitted(status_text):
        return CheckResult("capabilities", Status.WARN, "BPF is not permitted (needs CAP_SYS_ADMIN, or CAP_BPF "
                           "with CAP_PERFMON): eBPF metrics off")
    if not caps >> CAP_SYS_ADMIN & 1:
        return CheckResult("capabilities", Status.WARN, "BPF permitted; no CAP_SYS_ADMIN: interface counters "
                           "from /proc/<pid>/net/dev instead of netlink in the pod's namespace")
    return CheckResult("capabilities", Status.OK, "CAP_SYS_ADMIN: BPF and setns into pod namespaces permitted")


def check_ebpf(env: BpfEnvironment | None) -> CheckResult:
    """The agent's own decision (`run` logs the same reason when it turns eBPF off)."""
    if env is None:
        return CheckResult("eBPF", Status.WARN, "off: no cgroup hierarchy")
    if env.unavailable:
        return CheckResult("eBPF", Status.WARN, f"off: {env.unavailable}")
    detail = (f"available (cgroup v2 at {env.cgroup2_root}, tracefs at {env.tracefs}; TCP programs attach at "
              f"{env.attach_cgroup})")
    problems = [limitation.detail for limitation in env.limitations]
    old = too_old(env.kernel_release, KERNEL_BPF_CMPXCHG, "the TCP program's compare-and-swap (BPF_CMPXCHG)")
    if old:
        problems.append(f"{old}: no TCP metrics")
    if problems:
        return CheckResult("eBPF", Status.WARN, "; ".join([detail, *problems]))
    return CheckResult("eBPF", Status.OK, detail)


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
    from kpod_otel.assembly import bpf_environment, cgroup_fs

    status_text = Path("/proc/self/status").read_text()
    try:
        fs: CgroupFS | None = cgroup_fs(config)
        problem = ""
    except ConfigError as exc:
        fs, problem = None, str(exc)
    checks: list[Callable[[], CheckResult]] = [
        check_kernel,
        lambda: check_btf(config.cgroup.sys_root),
        lambda: check_bcc(config.bpf.enabled),
        check_headers,
        check_tracefs,
        lambda: check_cgroup(fs, problem),
        lambda: check_proc(config.cgroup.proc_root),
        lambda: check_capabilities(status_text),
        lambda: check_ebpf(None if fs is None else bpf_environment(config, fs)),
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
