"""MemoryCollector (cgroup files) on real v1 memory cgroups: an OOM kill under a small limit, and major page
faults of a process that maps a file whose pages were evicted from the page cache."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.cgroup.parsers import parse_memory_events, parse_memory_stat
from kpod_otel.collectors.memory import MAJOR_FAULTS, OOM_KILLS, MemoryCollector
from kpod_otel.model import ContainerInfo, PodInfo, Target
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, KubePod, systemd_burstable_pod

LIMIT = 48 * 1024 * 1024
FILE_PAGES = 2048  # 8 MiB


def pod_target(fs: CgroupFS, stats: AgentStats, pod: KubePod) -> list[Target]:
    return PodCgroupMapper(fs, stats).map([PodInfo(
        uid=pod.uid, name="mem-0", namespace="t", qos_class="Burstable",
        containers=(ContainerInfo("hog", pod.container_id, "containerd"),))])


def only_value(snap_points: dict[str, list[object]], metric: str, container_id: str) -> int:
    values = [o.value for o in snap_points[metric]  # type: ignore[attr-defined]
              if o.attributes["container.id"] == container_id]  # type: ignore[attr-defined]
    assert len(values) == 1
    return int(values[0])


def test_oom_kill_counted(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    mem_dir = os.path.join(CGROUP_ROOT, "memory", pod.container_path)
    with open(os.path.join(mem_dir, "memory.limit_in_bytes"), "w") as f:
        f.write(str(LIMIT))
    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    targets = pod_target(fs, stats, pod)
    collector = MemoryCollector(fs, stats)
    before = collector.collect(targets).points[pod.uid]
    assert only_value(before, OOM_KILLS, pod.container_id) == 0

    # touch 4x the limit, page by page: there is no swap to escape to, so the kernel must kill it
    hog = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c",
                            f"b = bytearray({4 * LIMIT})\nfor i in range(0, len(b), 4096): b[i] = 1"])
    assert hog.wait(timeout=60) == -signal.SIGKILL

    after = collector.collect(targets).points[pod.uid]
    with open(os.path.join(mem_dir, "memory.oom_control")) as f:
        kernel = parse_memory_events(f.read()).oom_kill
    assert only_value(after, OOM_KILLS, pod.container_id) == 1 == kernel
    assert stats.total("kpod.agent.errors") == 0


@pytest.fixture
def cold_file() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="kpt-cg-mem-", dir="/var/tmp")
    path = os.path.join(directory, "pages")
    with open(path, "wb") as f:
        f.write(os.urandom(4096) * FILE_PAGES)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # evict: the next touch is a major fault
    yield path
    os.unlink(path)
    os.rmdir(directory)


MAP_AND_TOUCH = f"""
import mmap, os, resource, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
m.madvise(mmap.MADV_RANDOM)  # no read-around: every touched page is read from disk by its own fault
total = 0
for i in range(0, {FILE_PAGES} * 4096, 4096):
    total += m[i]
print(resource.getrusage(resource.RUSAGE_SELF).ru_majflt, flush=True)
sys.stdin.readline()
"""


def test_major_faults_match_memory_stat_and_the_process(cgroup_tree: CgroupTree, cold_file: str) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    mem_dir = os.path.join(CGROUP_ROOT, "memory", pod.container_path)
    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    targets = pod_target(fs, stats, pod)
    collector = MemoryCollector(fs, stats)

    proc = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", MAP_AND_TOUCH, cold_file],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    process_majflt = int(proc.stdout.readline())  # the process's own count (it is the cgroup's only one)
    assert process_majflt >= FILE_PAGES

    # memcg statistics are flushed lazily (at the latest every 2 s): wait for them to catch up
    deadline = time.monotonic() + 10
    while True:
        reported = only_value(collector.collect(targets).points[pod.uid], MAJOR_FAULTS, pod.container_id)
        with open(os.path.join(mem_dir, "memory.stat")) as f:
            kernel = parse_memory_stat(f.read()).major_faults
        if reported == kernel == process_majflt or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    proc.wait(timeout=10)
    assert reported == kernel
    assert reported == process_majflt
