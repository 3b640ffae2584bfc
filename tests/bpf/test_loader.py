"""The loader: exact histogram bounds in the real kernel, one failing program leaving the others running,
no bcc -> cgroup-only, and clean detach."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kpod_otel.bpf.histogram import BOUNDS_SECONDS, NS_PER_S, SLOTS, bucket_counts, slot_of
from kpod_otel.bpf.program import BpfEnvironment, PerfEventAttach, ProgramSpec, defines
from kpod_otel.collectors.cpu_sched import CpuSchedCollector
from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
from kpod_otel.collectors.syscall import SYSCALL_COUNT, SyscallCollector
from kpod_otel.collectors.tcp import TcpCollector
from kpod_otel.model import ContainerTarget, Target
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import REPO, CgroupFactory, Workload, bpf_config, bpf_env_of, target_for, value
from tests.conftest import host_needs_v2, require_bcc

SLOT_PROBE = """
#include "kpod.h"
BPF_ARRAY(slot_out, u64, 1);
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    if (args->id != 39 || (bpf_get_current_pid_tgid() >> 32) != TGID)  // getpid(value) from the test
        return 0;
    int zero = 0;
    u64 slot = kpod_slot(args->args[0]);
    slot_out.update(&zero, &slot);
    return 0;
}
"""

VALUES = sorted({0, 1, 2, 3, 4, 5, 7, 8, 9, 999, 1000, 1023, 1024, 1025, 10**6, 10**9, 15 * 10**9,
                 *(2**k - 1 for k in range(1, 64)), *(2**k for k in range(0, 63)), 2**64 - 1})


def test_kernel_slots_land_in_the_bucket_whose_bounds_contain_the_value() -> None:
    require_bcc()
    from bcc import BPF

    text = SLOT_PROBE.replace('#include "kpod.h"', (REPO / "ebpf" / "kpod.h").read_text())
    b = BPF(text=text.encode(), cflags=[*defines(ProgramSpec("probe", ()), 1), f"-DTGID={os.getpid()}"])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong]
    try:
        out = b[b"slot_out"]
        for v in VALUES:
            libc.syscall(39, v)
            slot = int(out[out.Key(0)].value)
            assert slot == slot_of(v), v  # the Python mirror agrees with the kernel
            slots = [0] * SLOTS
            slots[slot] = 1
            bucket = bucket_counts(slots).index(1)
            seconds = v / NS_PER_S
            upper = BOUNDS_SECONDS[bucket] if bucket < len(BOUNDS_SECONDS) else float("inf")
            lower = BOUNDS_SECONDS[bucket - 1] if bucket > 0 else float("-inf")
            assert lower < seconds <= upper, (v, bucket, lower, upper)
    finally:
        b.cleanup()


def test_failing_programs_leave_the_others_working(tmp_path: Path, cgroups: CgroupFactory) -> None:
    # A program dir where tcp.c does not compile; the others are the real ones.
    for f in (REPO / "ebpf").iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "tcp.c").write_text((REPO / "ebpf" / "tcp.c").read_text() + "\nthis is not C;\n")
    config = bpf_config(program_dir=str(tmp_path))
    env = bpf_env_of(config)
    assert env.source_of("tcp") == tmp_path / "tcp.c"
    stats = AgentStats()

    class BrokenAttachMemory(MemoryBpfCollector):  # compiles, then one attach fails (no such function)
        def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
            spec = super().program_spec(env)
            bad = PerfEventAttach("kpod_no_such_function", 1, 6, 1)
            return ProgramSpec(spec.name, spec.tracepoints, (*spec.perf_events, bad), (), spec.failure_maps,
                               cgroup_maps=spec.cgroup_maps)

    tcp = TcpCollector(stats, env)
    mem = BrokenAttachMemory(stats, env)
    sysc = SyscallCollector(stats, env)
    try:
        assert not tcp.available and tcp.unavailable_reason.startswith("compile/load failed")
        assert not mem.available and mem.unavailable_reason.startswith("attach failed")
        assert sysc.available
        assert stats.get("kpod.agent.bpf.program.loaded", **{"kpod.bpf.program": "tcp"}) == 0
        assert stats.get("kpod.agent.bpf.program.loaded", **{"kpod.bpf.program": "mem"}) == 0
        assert stats.get("kpod.agent.bpf.program.loaded", **{"kpod.bpf.program": "syscall"}) == 1
        assert stats.get("kpod.agent.errors", **{"kpod.component": "bpf", "error.type": "load"}) == 2
        cg = cgroups.make("fail")
        t = target_for("x", cg)
        w = Workload("os.getpid()")
        try:
            cg.add(w.pid)
            w.run()
            assert value(sysc.collect([t]), t, SYSCALL_COUNT) >= 2
            assert tcp.collect([t]).points == {} and mem.collect([t]).points == {}
        finally:
            w.stop()
        assert stats.get("kpod.agent.bpf.map.capacity",
                         **{"kpod.bpf.program": "syscall", "kpod.bpf.map": "syscalls"}) == env.max_cgroups
        assert stats.get("kpod.agent.bpf.map.entries",
                         **{"kpod.bpf.program": "syscall", "kpod.bpf.map": "syscalls"}) >= 1
    finally:
        for c in (tcp, mem, sysc):
            c.close()
    assert stats.get("kpod.agent.bpf.program.loaded", **{"kpod.bpf.program": "syscall"}) == 0


NO_BCC = """
import logging, sys
sys.modules["bcc"] = None  # `import bcc` now raises ImportError, as on a node without python3-bpfcc
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from kpod_otel.assembly import bpf_environment, build_collectors, cgroup_fs
from kpod_otel.collectors.cpu_sched import CpuSchedCollector
from kpod_otel.config import CgroupConfig, Config, Profile
from kpod_otel.selfmetrics import AgentStats
stats = AgentStats()
config = Config(profile=Profile.COMPREHENSIVE,
                cgroup=CgroupConfig(root="/sys/fs/cgroup", proc_root="/proc", sys_root="/sys"))
fs = cgroup_fs(config)
collectors = build_collectors(config, fs, stats)
assert [c.name for c in collectors] == ["cpu", "memory", "disk", "network", "filesystem", "agent"]
assert collectors[0].ebpf is None  # CPU time, throttling and limit from the cgroup files alone
assert {s.name for s in collectors[0].instruments()} == {
    "kpod.cpu.time", "kpod.cpu.periods", "kpod.cpu.throttled.periods", "kpod.cpu.throttled.time", "kpod.cpu.limit"}
assert not collectors[1].ebpf_loaded  # memory from the cgroup files
for collector in collectors:
    collector.close()
c = CpuSchedCollector(stats, bpf_environment(config, fs))
assert not c.available and "bcc is not installed" in c.unavailable_reason
assert c.collect([]).points == {}
c.close()
print("errors", stats.get("kpod.agent.errors", **{"kpod.component": "bpf", "error.type": "unavailable"}))
"""


def test_without_bcc_the_agent_runs_cgroup_only() -> None:
    res = subprocess.run([sys.executable, "-c", NO_BCC], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1, res.stderr  # said once, clearly
    assert "bcc is not installed" in warnings[0] and "cgroup collectors only" in warnings[0]
    assert "errors 1" in res.stdout


@pytest.mark.parametrize("enabled", [False])
def test_cgroup_skb_kill_switch(enabled: bool) -> None:
    require_bcc()
    host_needs_v2()  # on a pure v1 host eBPF is off for that reason first
    stats = AgentStats()
    config = bpf_config(cgroup_skb=enabled)
    tcp = TcpCollector(stats, bpf_env_of(config))
    try:
        assert not tcp.available and "cgroup-skb" in tcp.unavailable_reason
    finally:
        tcp.close()


def test_map_full_failures_are_counted_in_the_kernel(cgroups: CgroupFactory) -> None:
    """With room for one cgroup, every other cgroup's first insert fails: the kernel counts it and the
    self-metrics report it next to entries and capacity."""
    require_bcc()
    stats = AgentStats()
    config = bpf_config(max_cgroups=1)
    sysc = SyscallCollector(stats, bpf_env_of(config))
    try:
        assert sysc.available, sysc.unavailable_reason
        a, b = cgroups.make("full-a"), cgroups.make("full-b")
        wa, wb = Workload("os.getpid()"), Workload("os.getpid()")
        try:
            a.add(wa.pid)
            b.add(wb.pid)
            wa.run()
            wb.run()
        finally:
            wa.stop()
            wb.stop()
        sysc.collect([target_for("a", a), target_for("b", b)])
        attrs = {"kpod.bpf.program": "syscall", "kpod.bpf.map": "syscalls"}
        assert stats.get("kpod.agent.bpf.map.capacity", **attrs) == 1
        assert stats.get("kpod.agent.bpf.map.entries", **attrs) == 1
        assert stats.get("kpod.agent.bpf.map.update.failures", **attrs) >= 1
    finally:
        sysc.close()


def test_run_time_stats_when_configured(cgroups: CgroupFactory) -> None:
    """bpf.enable-stats turns on the kernel's run-time accounting while the program is loaded (off by
    default: it is node-wide); run time and count then come from /proc/self/fdinfo."""
    require_bcc()
    stats = AgentStats()
    sysc = SyscallCollector(stats, bpf_env_of(bpf_config(enable_stats=True)))
    try:
        assert sysc.available, sysc.unavailable_reason
        cg = cgroups.make("stats")
        w = Workload("os.getpid()")
        try:
            cg.add(w.pid)
            w.run()
        finally:
            w.stop()
        sysc.collect([target_for("x", cg)])
        attrs = {"kpod.bpf.program": "syscall"}
        assert stats.get("kpod.agent.bpf.program.run.count", **attrs) > 0
        assert stats.get("kpod.agent.bpf.program.run.time", **attrs) > 0
    finally:
        sysc.close()


def test_full_removed_cgroups_map_is_counted(cgroups: CgroupFactory) -> None:
    """removed_cgroups holds bpf.max-cgroups ids until the next cycle: with room for one, the second of
    two removals in one cycle cannot be noted, and the kernel counts that."""
    require_bcc()
    stats = AgentStats()
    sysc = SyscallCollector(stats, bpf_env_of(bpf_config(max_cgroups=1)))
    try:
        assert sysc.available, sysc.unavailable_reason
        for label in ("rm-a", "rm-b"):
            cgroups.make(label).remove()
        sysc.collect([])
        assert stats.get("kpod.agent.bpf.map.update.failures",
                         **{"kpod.bpf.program": "syscall", "kpod.bpf.map": "removed_cgroups"}) >= 1
    finally:
        sysc.close()


# 64 threads that sleep and wake 20 times each: more tasks than an 8-entry LRU map holds.
WAKERS = """
import threading, time
def work():
    for _ in range(20):
        time.sleep(0.001)
threads = [threading.Thread(target=work) for _ in range(64)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_lru_evictions_of_wait_marks_are_counted(bpf_env: BpfEnvironment, cgroups: CgroupFactory) -> None:
    stats = AgentStats()
    env = dataclasses.replace(bpf_env, max_tasks=8, said=set())
    cpu = CpuSchedCollector(stats, env)
    try:
        assert cpu.available, cpu.unavailable_reason
        cg = cgroups.make("lru")
        w = Workload(WAKERS)
        try:
            cg.add(w.pid)
            w.run()
        finally:
            w.stop()
        cpu.collect([target_for("x", cg)])
        attrs = {"kpod.bpf.program": "cpu_sched", "kpod.bpf.map": "enqueued_at"}
        assert stats.get("kpod.agent.bpf.timestamps.missing", **attrs) >= 64  # at least one per thread
    finally:
        cpu.close()


def test_tcp_needs_bpf_cmpxchg(bpf_env: BpfEnvironment) -> None:
    """A kernel older than 5.12 cannot load the TCP program: said as such, nothing attached."""
    stats = AgentStats()
    tcp = TcpCollector(stats, dataclasses.replace(bpf_env, kernel_release="5.10.209", said=set()))
    try:
        assert not tcp.available and "5.12" in tcp.unavailable_reason and "BPF_CMPXCHG" in tcp.unavailable_reason
        assert stats.get("kpod.agent.bpf.program.loaded", **{"kpod.bpf.program": "tcp"}) == 0
    finally:
        tcp.close()


def test_containers_without_v2_directory_are_said_and_counted(bpf_env: BpfEnvironment, cgroups: CgroupFactory,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    stats = AgentStats()
    cpu = CpuSchedCollector(stats, dataclasses.replace(bpf_env, said=set()))
    seen = target_for("seen", cgroups.make("v2"))
    v1_only = Target(key="pod-v1", resource={},
                     containers=(ContainerTarget(name="c", container_id="id-v1", cgroup_path="kubepods/v1-only"),))
    try:
        assert cpu.available, cpu.unavailable_reason
        with caplog.at_level(logging.WARNING):
            cpu.collect([seen, v1_only])
            cpu.collect([seen, v1_only])
        said = [r for r in caplog.records if "no cgroup v2 directory" in r.getMessage()]
        assert len(said) == 1 and "kubepods/v1-only" in said[0].getMessage()  # once
        assert stats.get("kpod.agent.bpf.containers.unattributed") == 1
        cpu.collect([seen])
        assert stats.get("kpod.agent.bpf.containers.unattributed") == 0
    finally:
        cpu.close()
