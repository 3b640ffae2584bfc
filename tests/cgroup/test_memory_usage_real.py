"""MemoryCollector's usage, working set, RSS, cache, limit and pressure stall on real cgroups of this hybrid
machine (v1 memory controller, PSI in the v2 tree), compared with what the test allocated and wrote, with
the process's own view (/proc/<pid>/status) and with the cgroup's files."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.cgroup.parsers import parse_memory_stat, parse_pressure, parse_single_value
from kpod_otel.collector import Observation
from kpod_otel.collectors.memory import CACHE, LIMIT, RSS, STALL_TIME, USAGE, WORKING_SET, MemoryCollector
from kpod_otel.model import ContainerInfo, PodInfo, Target
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, KubePod, systemd_burstable_pod

MiB = 1024 * 1024
LIMIT_BYTES = 256 * MiB
ANON = 64 * MiB
CACHED = 32 * MiB


def targets_for(fs: CgroupFS, stats: AgentStats, pod: KubePod) -> list[Target]:
    return PodCgroupMapper(fs, stats).map([PodInfo(
        uid=pod.uid, name="mem-0", namespace="t", qos_class="Burstable",
        containers=(ContainerInfo("app", pod.container_id, "containerd"),
                    ContainerInfo("pause-like", pod.sandbox_id, "containerd")))])


def value(points: dict[str, list[Observation]], metric: str, cid: str, **attrs: str) -> float | None:
    found = [o.value for o in points.get(metric, []) if o.attributes["container.id"] == cid
             and all(o.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) <= 1
    return float(found[0]) if found else None


def until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """memcg statistics are flushed lazily (at the latest every 2 s): poll until they settle."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


HOLD_ANON = f"""
import sys
b = bytearray({ANON})
for i in range(0, len(b), 4096):
    b[i] = 1
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["RssAnon"].split()[0]) * 1024, flush=True)
sys.stdin.readline()
"""


def test_anonymous_memory_usage_working_set_and_limit(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    mem_dir = Path(CGROUP_ROOT, "memory", pod.container_path)
    (mem_dir / "memory.limit_in_bytes").write_text(str(LIMIT_BYTES))
    fs, stats = CgroupFS.detect(CGROUP_ROOT), AgentStats()
    targets = targets_for(fs, stats, pod)
    collector = MemoryCollector(fs, stats)
    proc = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", HOLD_ANON],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    rss_anon = int(proc.stdout.readline())  # the process's own resident anonymous memory
    assert rss_anon >= ANON

    points: dict[str, list[Observation]] = {}

    def settled() -> bool:
        nonlocal points
        points = collector.collect(targets).points[pod.uid]
        rss = value(points, RSS, pod.container_id)
        return rss is not None and abs(rss - rss_anon) <= MiB

    settled_ok = until(settled)
    stat = parse_memory_stat((mem_dir / "memory.stat").read_text())
    usage_file = parse_single_value((mem_dir / "memory.usage_in_bytes").read_text()).value
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    proc.wait(timeout=10)
    assert settled_ok, f"memcg anon {value(points, RSS, pod.container_id)} vs the process's RssAnon {rss_anon}"

    rss = value(points, RSS, pod.container_id)
    usage = value(points, USAGE, pod.container_id)
    working_set = value(points, WORKING_SET, pod.container_id)
    assert rss is not None and usage is not None and working_set is not None and usage_file is not None
    assert rss >= ANON and stat.anon is not None and abs(rss - stat.anon) <= MiB  # total_rss
    assert abs(usage - usage_file) <= MiB  # memory.usage_in_bytes
    assert usage >= rss  # usage charges anon, page cache and kernel memory
    assert rss <= working_set <= usage  # anonymous memory is never inactive page cache
    assert value(points, LIMIT, pod.container_id) == LIMIT_BYTES
    # the container without a limit ("unlimited" is a huge number in v1): no limit point, a small usage
    assert value(points, LIMIT, pod.sandbox_id) is None
    idle = value(points, USAGE, pod.sandbox_id)
    assert idle is not None and idle < 2 * MiB
    assert stats.total("kpod.agent.errors") == 0


@pytest.fixture
def scratch() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="kpt-cg-memusage-", dir="/var/tmp")  # a disk filesystem, not tmpfs
    yield directory
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


WRITE_ONCE = f"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
block = os.urandom(1 << 20)
for _ in range({CACHED // MiB}):
    os.write(fd, block)
os.fsync(fd)
os.close(fd)
print("written", flush=True)
sys.stdin.readline()
"""


def test_page_cache_is_cache_and_not_working_set(cgroup_tree: CgroupTree, scratch: str) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    mem_dir = Path(CGROUP_ROOT, "memory", pod.container_path)
    fs, stats = CgroupFS.detect(CGROUP_ROOT), AgentStats()
    targets = targets_for(fs, stats, pod)
    collector = MemoryCollector(fs, stats)
    proc = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", WRITE_ONCE, os.path.join(scratch, "data")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == b"written\n"

    points: dict[str, list[Observation]] = {}

    def settled() -> bool:
        nonlocal points
        points = collector.collect(targets).points[pod.uid]
        cache = value(points, CACHE, pod.container_id)
        return cache is not None and cache >= CACHED

    settled_ok = until(settled)
    stat = parse_memory_stat((mem_dir / "memory.stat").read_text())
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    proc.wait(timeout=10)
    assert settled_ok, f"cache {value(points, CACHE, pod.container_id)} < the {CACHED} bytes written"

    cache = value(points, CACHE, pod.container_id)
    rss = value(points, RSS, pod.container_id)
    usage = value(points, USAGE, pod.container_id)
    working_set = value(points, WORKING_SET, pod.container_id)
    assert cache is not None and rss is not None and usage is not None and working_set is not None
    assert stat.file is not None and abs(cache - stat.file) <= MiB  # total_cache
    assert rss < CACHED  # the interpreter's own anonymous memory, not the file
    assert usage >= cache
    # pages written once sit on the inactive list: the working set leaves them out, usage does not
    assert working_set <= usage - CACHED // 2
    assert stats.total("kpod.agent.errors") == 0


def pressure_file(pod: KubePod, resource: str) -> tuple[float, float | None]:
    p = parse_pressure(Path(CGROUP_ROOT, "unified", pod.container_path, f"{resource}.pressure").read_text())
    assert p.some_usec is not None
    return p.some_usec / 1e6, None if p.full_usec is None else p.full_usec / 1e6


def stall(points: dict[str, list[Observation]], cid: str, resource: str) -> tuple[float | None, float | None]:
    return (value(points, STALL_TIME, cid, **{"kpod.pressure.resource": resource, "kpod.pressure.type": "some"}),
            value(points, STALL_TIME, cid, **{"kpod.pressure.resource": resource, "kpod.pressure.type": "full"}))


def test_cpu_contention_raises_cpu_pressure(cgroup_tree: CgroupTree) -> None:
    """Two CPU burners in a container limited to a tenth of a CPU: runnable, not running, for most of 1 s."""
    pod = systemd_burstable_pod(cgroup_tree)
    cpu_dir = Path(CGROUP_ROOT, "cpu", pod.container_path)
    (cpu_dir / "cpu.cfs_period_us").write_text("100000")
    (cpu_dir / "cpu.cfs_quota_us").write_text("10000")
    fs, stats = CgroupFS.detect(CGROUP_ROOT), AgentStats()
    targets = targets_for(fs, stats, pod)
    collector = MemoryCollector(fs, stats)
    before = stall(collector.collect(targets).points[pod.uid], pod.container_id, "cpu")
    assert before[0] is not None
    burn = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.0:\n    pass\n"
    burners = [cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", burn]) for _ in range(2)]
    assert all(b.wait(timeout=30) == 0 for b in burners)
    after = stall(collector.collect(targets).points[pod.uid], pod.container_id, "cpu")
    assert after == pressure_file(pod, "cpu")  # exactly the kernel's totals (static once the tasks left)
    assert after[0] is not None and after[0] - before[0] >= 0.5  # seconds stalled out of ~1 s x 2 tasks
    assert stats.total("kpod.agent.errors") == 0


def test_reclaim_under_a_small_limit_raises_memory_pressure(cgroup_tree: CgroupTree, scratch: str) -> None:
    """Writing 64 MiB through a 16 MiB memory limit: the kernel reclaims the container's page cache as it
    goes, and reclaim is memory stall."""
    pod = systemd_burstable_pod(cgroup_tree)
    (Path(CGROUP_ROOT, "memory", pod.container_path) / "memory.limit_in_bytes").write_text(str(16 * MiB))
    fs, stats = CgroupFS.detect(CGROUP_ROOT), AgentStats()
    targets = targets_for(fs, stats, pod)
    collector = MemoryCollector(fs, stats)
    before = stall(collector.collect(targets).points[pod.uid], pod.container_id, "memory")
    code = WRITE_ONCE.replace(f"range({CACHED // MiB})", "range(64)").replace("sys.stdin.readline()\n", "")
    writer = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", code, os.path.join(scratch, "big")],
                               stdout=subprocess.DEVNULL)
    assert writer.wait(timeout=60) == 0
    after = stall(collector.collect(targets).points[pod.uid], pod.container_id, "memory")
    assert after == pressure_file(pod, "memory")
    assert before[0] is not None and after[0] is not None and after[0] > before[0]
    assert stats.total("kpod.agent.errors") == 0


def test_cold_reads_raise_io_pressure(cgroup_tree: CgroupTree, scratch: str) -> None:
    """Random page reads of a file evicted from the page cache: each waits for the disk (iowait)."""
    path = os.path.join(scratch, "cold")
    with open(path, "wb") as f:
        f.write(os.urandom(8 * MiB))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    pod = systemd_burstable_pod(cgroup_tree)
    fs, stats = CgroupFS.detect(CGROUP_ROOT), AgentStats()
    targets = targets_for(fs, stats, pod)
    collector = MemoryCollector(fs, stats)
    before = stall(collector.collect(targets).points[pod.uid], pod.container_id, "io")
    code = ("import mmap, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)\nm.madvise(mmap.MADV_RANDOM)\n"
            f"total = sum(m[i] for i in range(0, {8 * MiB}, 4096))\n")
    reader = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", code, path])
    assert reader.wait(timeout=60) == 0
    after = stall(collector.collect(targets).points[pod.uid], pod.container_id, "io")
    assert after == pressure_file(pod, "io")
    assert before[0] is not None and after[0] is not None and after[0] > before[0]
    assert stats.total("kpod.agent.errors") == 0
