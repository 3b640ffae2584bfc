"""Faults in the kernel layer: a tracepoint missing, BPF not permitted, bcc not installed. The rest keeps
working in each case (a map full is tests/bpf/test_loader.py::test_map_full_failures_are_counted_in_the_kernel;
a program that does not compile or attach is ...::test_failing_programs_leave_the_others_working)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
from kpod_otel.collectors.syscall import SYSCALL_COUNT, SyscallCollector
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import V2_ROOT, Cgroup, Workload, bpf_config, bpf_env_of, target_for, value
from tests.cgroup.conftest import require_cgroups
from tests.conftest import host_needs_v2, require, require_bcc
from tests.export.helpers import attrs, by_resource
from tests.reliability.node import FakeNode

TRACEFS = Path("/sys/kernel/tracing")


def tracefs_without(tmp: Path, missing: str) -> Path:
    """A copy of the running kernel's tracepoint format files, minus one tracepoint (as on a kernel
    built without it). Only the loader's pre-flight check reads it; bcc attaches through the real one."""
    root = tmp / "tracing"
    for category in ("sched", "raw_syscalls", "oom", "cgroup", "sock", "tcp", "signal"):
        for event_dir in (TRACEFS / "events" / category).iterdir():
            fmt = event_dir / "format"
            if f"{category}/{event_dir.name}" != missing and fmt.is_file():
                (root / "events" / category / event_dir.name).mkdir(parents=True)
                shutil.copy(fmt, root / "events" / category / event_dir.name / "format")
    return root


def test_missing_tracepoint_disables_only_its_program(tmp_path: Path) -> None:
    require_bcc()
    host_needs_v2()  # on a pure v1 host eBPF is off for that reason first
    require((TRACEFS / "events" / "oom" / "mark_victim" / "format").is_file(), "needs tracefs")
    config = bpf_config()
    env = dataclasses.replace(bpf_env_of(config),
                              tracefs=tracefs_without(tmp_path, "oom/mark_victim"))
    stats = AgentStats()
    mem = MemoryBpfCollector(stats, env)
    sysc = SyscallCollector(stats, env)
    cg = Cgroup(V2_ROOT / f"kpt-rel-tp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    cg.path.mkdir()
    try:
        assert not mem.available
        assert mem.unavailable_reason == "tracepoint oom:mark_victim does not exist in this kernel"
        assert stats.get("kpod.agent.errors", **{"kpod.component": "bpf", "error.type": "load"}) == 1
        assert stats.get("kpod.agent.bpf.program.loaded", **{"kpod.bpf.program": "mem"}) == 0
        assert mem.collect([]).points == {}
        # the other program loads and counts this cgroup's syscalls
        assert sysc.available, sysc.unavailable_reason
        w = Workload("os.getpid()")
        try:
            cg.add(w.pid)
            w.run()
        finally:
            w.stop()
        t = target_for("x", cg)
        assert value(sysc.collect([t]), t, SYSCALL_COUNT) >= 2
    finally:
        mem.close()
        sysc.close()
        cg.remove()


# sitecustomize runs at interpreter start-up: from then on `import bcc` fails as on a node without
# python3-bpfcc, whatever the venv links in.
NO_BCC_SITECUSTOMIZE = 'import sys\nsys.modules["bcc"] = None  # type: ignore[assignment]\n'


def _no_bcc(tmp: Path, env: dict[str, str]) -> list[str]:
    site = tmp / "no-bcc"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_BCC_SITECUSTOMIZE)
    env["PYTHONPATH"] = str(site)
    return []


def _no_bpf_permission(tmp: Path, env: dict[str, str]) -> list[str]:
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    caps = "-sys_admin,-bpf,-perfmon"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


@pytest.mark.parametrize(("fault", "reason"), [
    (_no_bcc, "bcc is not installed"),
    (_no_bpf_permission, "BPF is not permitted"),
], ids=["bcc-not-installed", "bpf-not-permitted"])
def test_agent_without_ebpf_still_exports_cgroup_metrics(tmp_path: Path, fault: object, reason: str) -> None:
    require_cgroups()
    node = FakeNode.start(tmp_path)
    try:
        pod = node.add_pod("kpt-rel-noebpf")
        env = node.env()
        assert callable(fault)
        prefix = fault(tmp_path, env)
        cmd = [*prefix, sys.executable, "-m", "kpod_otel", "run", "--once", "--config", str(node.config())]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        warnings = [ln for ln in proc.stderr.splitlines() if " WARNING " in ln and "eBPF" in ln]
        assert len(warnings) == 1 and reason in warnings[0] and "cgroup collectors only" in warnings[0], proc.stderr
        got = by_resource([r.request for r in node.receiver.wait_for(1)])
        metrics = got[pod.uid]
        # the memory metrics come from the cgroup files, per container, as announced
        faults = metrics["kpod.mem.major.page.faults"].sum.data_points
        cid = pod.pod["status"]["containerStatuses"][0]["containerID"].split("://")[1]
        assert {attrs(dp.attributes)["container.id"] for dp in faults} == {cid}
        ebpf_only = ("kpod.cpu.runqueue.", "kpod.cpu.context.", "kpod.net.tcp.", "kpod.syscall.")
        assert not [name for name in metrics if name.startswith(ebpf_only)]
        # CPU time comes from the cgroup files: it needs no eBPF (issue 15)
        cpu_time = metrics["kpod.cpu.time"].sum.data_points
        assert {(attrs(dp.attributes)["container.id"], attrs(dp.attributes)["cpu.mode"]) for dp in cpu_time} == {
            (cid, "user"), (cid, "system")}
        errors = got["kpod-otel"]["kpod.agent.errors"].sum.data_points
        by_kind = {(attrs(dp.attributes)["kpod.component"], attrs(dp.attributes)["error.type"]): dp.as_int
                   for dp in errors}
        assert by_kind[("bpf", "unavailable")] == 1
    finally:
        node.close()


