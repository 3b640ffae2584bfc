"""Cgroup files kept open across cycles (`KeptFiles`, through `ProblemLog.read(keep=True)`), on this machine's
real cgroups: a re-read returns the kernel's current values, a removed cgroup is accounted as before, a
re-created one is read afresh, and descriptors of files no longer read are closed. Independent sources:
the files read with open(), the cgroup's own limit written by the test, /proc/self/fd."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from kpod_otel.cgroup.files import CgroupFiles
from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.parsers import parse_cpu_stat
from kpod_otel.cgroup.problems import ProblemLog
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, rmdir_cgroup, systemd_burstable_pod

SPIN = """
import time
print("started", flush=True)
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
print("spun", flush=True)
time.sleep(300)
"""


def open_fds_under(directory: str) -> list[str]:
    """What this process's descriptors point to under `directory` (the kernel's view, /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used
        if target.startswith(directory + "/"):
            found.append(target)
    return found


def files_for(component: str, stats: AgentStats) -> CgroupFiles:
    return CgroupFiles(CgroupFS.detect(CGROUP_ROOT), ProblemLog(component, stats, logging.getLogger(__name__)))


def test_a_kept_file_returns_current_values(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    stats = AgentStats()
    files = files_for("cpu", stats)
    unified = os.path.join(CGROUP_ROOT, "unified", pod.container_path)
    first = files.cpu_stat(pod.uid, pod.container_path, in_v2_tree=True, throttling=False)
    assert first is not None and first.usage_usec == 0  # nothing ran in it yet
    assert open_fds_under(unified) == [f"{unified}/cpu.stat"]  # kept open

    proc = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", SPIN], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    assert proc.stdout.readline() == b"spun\n"
    again = files.cpu_stat(pod.uid, pod.container_path, in_v2_tree=True, throttling=False)
    fresh = parse_cpu_stat(Path(unified, "cpu.stat").read_text())  # opened now: the reference
    assert again is not None and again.usage_usec is not None and fresh.usage_usec is not None
    assert again.usage_usec >= 400_000  # the spin, seen through the descriptor opened before it ran
    assert fresh.usage_usec - 50_000 <= again.usage_usec <= fresh.usage_usec
    assert open_fds_under(unified) == [f"{unified}/cpu.stat"]  # the same one descriptor, not a new one
    assert stats.total("kpod.agent.errors") == 0


def test_a_removed_cgroup_read_through_a_kept_file_is_vanished(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    stats = AgentStats()
    files = files_for("memory", stats)
    memory_dir = os.path.join(CGROUP_ROOT, "memory", pod.container_path)
    assert files.memory_usage(pod.uid, pod.container_path) is not None
    assert open_fds_under(memory_dir) == [f"{memory_dir}/memory.usage_in_bytes"]

    assert rmdir_cgroup(pod.container_path)
    assert files.memory_usage(pod.uid, pod.container_path) is None
    assert stats.get("kpod.agent.errors", **{"kpod.component": "memory", "error.type": "vanished"}) == 1
    assert stats.total("kpod.agent.errors") == 1
    assert open_fds_under(memory_dir) == []  # the removed cgroup's descriptor was closed


def test_a_recreated_cgroup_is_read_afresh(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    stats = AgentStats()
    files = files_for("memory", stats)
    limit_file = Path(CGROUP_ROOT, "memory", pod.container_path, "memory.limit_in_bytes")
    limit_file.write_text(str(64 << 20))
    first = files.memory_limit(pod.uid, pod.container_path)
    assert first is not None and first.bytes == 64 << 20

    assert rmdir_cgroup(pod.container_path)
    cgroup_tree.make(pod.container_path)  # the same path, a new cgroup
    limit_file.write_text(str(32 << 20))
    second = files.memory_limit(pod.uid, pod.container_path)
    assert second is not None and second.bytes == 32 << 20
    assert stats.total("kpod.agent.errors") == 0


def test_files_not_read_for_a_cycle_are_closed(cgroup_tree: CgroupTree) -> None:
    pods = [systemd_burstable_pod(cgroup_tree) for _ in range(2)]
    stats = AgentStats()
    files = files_for("memory", stats)
    dirs = [os.path.join(CGROUP_ROOT, "memory", p.container_path) for p in pods]
    for pod in pods:  # cycle 1: both containers
        assert files.memory_usage(pod.uid, pod.container_path) is not None
    files.problems.prune(p.uid for p in pods)
    assert [len(open_fds_under(d)) for d in dirs] == [1, 1]

    for _ in range(2):  # cycles 2 and 3: the second container left
        assert files.memory_usage(pods[0].uid, pods[0].container_path) is not None
        files.problems.prune([pods[0].uid])
    assert [len(open_fds_under(d)) for d in dirs] == [1, 0]
    assert len(files.problems.kept) == 1

    files.problems.close()
    assert [len(open_fds_under(d)) for d in dirs] == [0, 0]


def test_beyond_the_budget_files_are_read_without_being_kept(cgroup_tree: CgroupTree) -> None:
    pods = [systemd_burstable_pod(cgroup_tree) for _ in range(3)]
    limits = [16 << 20, 24 << 20, 40 << 20]
    for pod, limit in zip(pods, limits, strict=True):
        Path(CGROUP_ROOT, "memory", pod.container_path, "memory.limit_in_bytes").write_text(str(limit))
    stats = AgentStats()
    files = files_for("memory", stats)
    files.problems.kept.limit = 1
    memory_dirs = [os.path.join(CGROUP_ROOT, "memory", p.container_path) for p in pods]
    for _ in range(2):
        read = [files.memory_limit(p.uid, p.container_path) for p in pods]
        assert [r.bytes if r is not None else None for r in read] == limits
        assert sum(len(open_fds_under(d)) for d in memory_dirs) == 1
        files.problems.prune(p.uid for p in pods)
    files.problems.close()
    assert stats.total("kpod.agent.errors") == 0
