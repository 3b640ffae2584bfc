"""Memory metrics per cgroup against the v1 memory controller's own counters (the same truth the
cgroup-file collector reads): an OOM kill and major page faults, in processes that sit in a v1 memory
cgroup and, for eBPF attribution, in a v2 cgroup."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from kpod_otel.collectors.mem_bpf import MAJOR_FAULTS, OOM_KILLS, MemoryBpfCollector
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import CgroupFactory, Workload, target_for, value
from tests.conftest import host_needs_v1
from tests.series_rules import SeriesChecker

V1_MEMORY = Path("/sys/fs/cgroup/memory")

HOG = """
chunks = []
while True:
    chunks.append(bytearray(4 << 20))  # touched: bytearray zero-fills
"""

# Map a file whose pages were dropped from the page cache and touch one byte per page.
FAULTER = """
import mmap
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
m.madvise(mmap.MADV_RANDOM)  # no read-around: one major fault per page
total = sum(m[i] for i in range(0, len(m), mmap.PAGESIZE))
m.close()
os.close(fd)
"""


def v1_stat(cg_path: Path, key: str) -> int:
    for line in (cg_path / "memory.stat").read_text().splitlines():
        name, _, val = line.partition(" ")
        if name == key:
            return int(val)
    raise KeyError(key)


def v1_oom_kills(cg_path: Path) -> int:
    for line in (cg_path / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise KeyError("oom_kill")


def test_oom_kill_charged_to_victim(mem_collector: MemoryBpfCollector, cgroups: CgroupFactory) -> None:
    host_needs_v1("memory")
    a, b = cgroups.make("oom-a"), cgroups.make("oom-b")
    mem = cgroups.make("oom-mem", V1_MEMORY)
    (mem.path / "memory.limit_in_bytes").write_text(str(64 << 20))
    (mem.path / "memory.swappiness").write_text("0")
    ta, tb = target_for("a", a), target_for("b", b)
    hog, bystander = Workload(HOG), Workload("pass")
    try:
        a.add(hog.pid)
        mem.add(hog.pid)
        b.add(bystander.pid)
        mem.add(bystander.pid)  # same memory cgroup, but the hog is the one that grows and dies
        hog.start()
        assert hog.proc.wait(timeout=60) == -9  # SIGKILL from the OOM killer
        snap = mem_collector.collect([ta, tb])
        truth = v1_oom_kills(mem.path)
    finally:
        hog.stop()
        bystander.stop()
    assert truth == 1
    assert value(snap, ta, OOM_KILLS) == 1
    assert value(snap, tb, OOM_KILLS) == 0


def test_major_faults_match_memory_stat(mem_collector: MemoryBpfCollector, cgroups: CgroupFactory) -> None:
    host_needs_v1("memory")
    a, b = cgroups.make("pf-a"), cgroups.make("pf-b")
    mem_a, mem_b = cgroups.make("pf-mem-a", V1_MEMORY), cgroups.make("pf-mem-b", V1_MEMORY)
    ta, tb = target_for("a", a), target_for("b", b)
    with tempfile.NamedTemporaryFile(dir="/var/tmp", prefix="kpt-bpf-") as f:
        f.write(os.urandom(8 << 20))
        f.flush()
        os.fsync(f.fileno())
        wa, wb = Workload(FAULTER, f.name), Workload("pass")
        try:
            for w, v2, v1 in ((wa, a, mem_a), (wb, b, mem_b)):
                v2.add(w.pid)
                v1.add(w.pid)
            base_a, base_b = v1_stat(mem_a.path, "pgmajfault"), v1_stat(mem_b.path, "pgmajfault")
            wa.run()
            wb.run()
            truth_a = v1_stat(mem_a.path, "pgmajfault") - base_a
            truth_b = v1_stat(mem_b.path, "pgmajfault") - base_b
            snap = mem_collector.collect([ta, tb])
        finally:
            wa.stop()
            wb.stop()
    assert truth_a >= 1000  # 2048 pages, read one fault at a time
    assert value(snap, ta, MAJOR_FAULTS) == truth_a
    assert value(snap, tb, MAJOR_FAULTS) == truth_b


def test_first_oom_kill_is_a_step_from_zero(mem_collector: MemoryBpfCollector, cgroups: CgroupFactory) -> None:
    """Through the pipeline: the container is exported with 0 OOM kills from the first cycle (its map has
    no entry yet), then 1 under the same start time once the kernel killed its process."""
    host_needs_v1("memory")
    a = cgroups.make("oom0-a")
    mem = cgroups.make("oom0-mem", V1_MEMORY)
    (mem.path / "memory.limit_in_bytes").write_text(str(64 << 20))
    (mem.path / "memory.swappiness").write_text("0")
    ta = target_for("a", a)
    stats = AgentStats()
    pipeline = MetricsPipeline([mem_collector], {"service.name": "kpod-otel"}, stats)  # not closed: shared
    checker = SeriesChecker()

    def oom_points() -> list[tuple[int, int | float, int]]:
        result = pipeline.collect([ta])
        checker.feed(result.request)
        target = result.target(ta.key)
        assert target is not None
        return [(p.start_ns, p.value, p.flags) for p in target.numbers(OOM_KILLS)]

    before = [oom_points(), oom_points()]
    hog = Workload(HOG)
    try:
        a.add(hog.pid)
        mem.add(hog.pid)
        hog.start()
        assert hog.proc.wait(timeout=60) == -9  # SIGKILL from the OOM killer
        truth = v1_oom_kills(mem.path)
    finally:
        hog.stop()
    after = oom_points()
    assert truth == 1
    start = before[0][0][0]
    assert before == [[(start, 0, 0)], [(start, 0, 0)]]
    assert after == [(start, 1, 0)]
    assert start <= time.time_ns() and not checker.violations, checker.violations
