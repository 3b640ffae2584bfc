"""Memory metrics per cgroup: an OOM kill against the v1 memory controller's own oom_kill, and major page
faults (one source, memory.stat) against the process's own majflt, in processes that sit in a v1 memory
cgroup and, for eBPF attribution, in a v2 cgroup."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
from kpod_otel.collectors.memory import MAJOR_FAULTS, OOM_KILLS, MemoryCollector
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import Cgroup, CgroupFactory, Workload, target_for, value
from tests.conftest import host_needs_v1
from tests.series_rules import SeriesChecker

V1_MEMORY = Path("/sys/fs/cgroup/memory")

HOG = """
chunks = []
while True:
    chunks.append(bytearray(4 << 20))  # touched: bytearray zero-fills
"""

# Map a file whose pages were dropped from the page cache; fault half of its pages in by touching them
# (the perf event PAGE_FAULTS_MAJ sees these) and the other half through /proc/self/mem, i.e. through
# get_user_pages on behalf of the process (no perf event; memory.stat pgmajfault and the process's own
# majflt count them).
FAULTER = """
import ctypes, mmap
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
m = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
m.madvise(mmap.MADV_RANDOM)  # no read-around: one major fault per page
view = ctypes.c_char.from_buffer(m)
addr = ctypes.addressof(view)
half = len(m) // 2
total = sum(m[i] for i in range(0, half, mmap.PAGESIZE))
mem = os.open("/proc/self/mem", os.O_RDONLY)
for off in range(half, len(m), mmap.PAGESIZE):
    total += os.pread(mem, 1, addr + off)[0]
os.close(mem)
del view
m.close()
os.close(fd)
"""


def majflt(pid: int) -> int:
    """Major faults of the process (/proc/<pid>/stat field 12), GUP faults included."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[9])


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


def test_major_faults_have_one_source(mem_collector: MemoryBpfCollector, cgroups: CgroupFactory) -> None:
    """`kpod.mem.major.page.faults` comes from memory.stat for every container, also those the eBPF
    memory program sees: the perf event would miss the faults taken through get_user_pages."""
    host_needs_v1("memory")
    a = cgroups.make("pf-a")
    mem_a = Cgroup(V1_MEMORY / a.path.name)  # the same relative path in both hierarchies, as kubelet does
    mem_a.path.mkdir()
    cgroups.made.append(mem_a)
    ta = target_for("a", a)
    assert ta.containers[0].cgroup_id is not None
    # The memory collector as the agent builds it, with its eBPF source loaded (not closed here: the
    # session's program).
    memory = MemoryCollector(CgroupFS.detect("/sys/fs/cgroup"), AgentStats(), ebpf=mem_collector)
    assert memory.ebpf_loaded
    with tempfile.NamedTemporaryFile(dir="/var/tmp", prefix="kpt-bpf-") as f:
        f.write(os.urandom(8 << 20))
        f.flush()
        os.fsync(f.fileno())
        wa = Workload(FAULTER, f.name)
        try:
            a.add(wa.pid)
            mem_a.add(wa.pid)
            before = majflt(wa.pid), value(memory.collect([ta]), ta, MAJOR_FAULTS)
            wa.run()
            truth = majflt(wa.pid) - before[0]
            reported = value(memory.collect([ta]), ta, MAJOR_FAULTS) - before[1]
            snap = mem_collector.collect([ta])
        finally:
            wa.stop()
    assert truth >= 2000  # 2048 pages, one fault each, half of them through get_user_pages
    assert reported == truth
    assert MAJOR_FAULTS not in snap.points.get(ta.key, {})  # one source: the eBPF program reports none


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


def test_memory_collector_zeros_only_the_oom_kills_ebpf_counts(mem_collector: MemoryBpfCollector,
                                                               cgroups: CgroupFactory) -> None:
    """Through the pipeline with the memory collector as the agent builds it (eBPF loaded): a container
    eBPF serves gets 0 OOM kills before its first kill (its map has no entry), and its major faults are
    memory.stat's value. Major faults have no eBPF source: when memory.stat cannot be read (here: the
    container has no v1 memory cgroup), there is no point rather than an invented 0, and the read problem
    is counted."""
    host_needs_v1("memory")
    a, b = cgroups.make("z-a"), cgroups.make("z-b")
    mem_a = Cgroup(V1_MEMORY / a.path.name)  # the same relative path in both hierarchies, as kubelet does
    mem_a.path.mkdir()
    cgroups.made.append(mem_a)
    ta, tb = target_for("a", a), target_for("b", b)
    stats = AgentStats()
    memory = MemoryCollector(CgroupFS.detect("/sys/fs/cgroup"), stats, ebpf=mem_collector)
    pipeline = MetricsPipeline([memory], {"service.name": "kpod-otel"}, stats)  # not closed: shared program
    checker = SeriesChecker()
    with tempfile.NamedTemporaryFile(dir="/var/tmp", prefix="kpt-bpf-") as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
        faulter = Workload(FAULTER, f.name)
        try:
            a.add(faulter.pid)
            mem_a.add(faulter.pid)
            # No creation time on these targets: the first cycle is the major faults' baseline (0).
            base = v1_stat(mem_a.path, "total_pgmajfault")
            results = [pipeline.collect([ta, tb])]
            faulter.run()
            results.append(pipeline.collect([ta, tb]))
            truth = v1_stat(mem_a.path, "total_pgmajfault") - base
        finally:
            faulter.stop()
    pa, pb = [], []
    for result in results:
        checker.feed(result.request)
        target_a, target_b = result.target(ta.key), result.target(tb.key)
        assert target_a is not None and target_b is not None
        pa.append(([p.value for p in target_a.numbers(OOM_KILLS)], [p.value for p in target_a.numbers(MAJOR_FAULTS)]))
        pb.append(([p.value for p in target_b.numbers(OOM_KILLS)], [p.value for p in target_b.numbers(MAJOR_FAULTS)]))
    assert truth >= 200  # 256 pages, one fault each
    assert pa == [([0], [0]), ([0], [truth])]
    assert pb == [([0], []), ([0], [])]  # OOM kills: eBPF's zero; major faults: nothing to report
    memory_errors = [v for name, attrs, v in stats.items()
                     if name == "kpod.agent.errors" and attrs["kpod.component"] == "memory"]
    assert sum(memory_errors) == 2  # b's unreadable memory.stat, once per cycle
    assert not checker.violations, checker.violations


def _oom_program_loaded_at_s() -> int:
    """When the kernel loaded this process's oom:mark_victim program (bpftool's loaded_at, whole seconds); the
    process's programs are the prog_ids of its file descriptors."""
    mine: set[int] = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        mine.update(int(line.split()[1]) for line in text.splitlines() if line.startswith("prog_id:"))
    progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], check=True, capture_output=True,
                                      text=True).stdout)
    loaded = [p["loaded_at"] for p in progs if p.get("name") == "tracepoint__oom__mark_victim" and p["id"] in mine]
    assert len(loaded) == 1, f"this process holds {len(loaded)} oom:mark_victim programs"
    return int(loaded[0])


def test_oom_kills_eBPF_serves_start_at_the_program_load(mem_collector: MemoryBpfCollector,
                                                         cgroups: CgroupFactory) -> None:
    """A pod created long before the agent (a restarted agent): the OOM kills eBPF counts for it hold only
    what happened since the program was loaded, so their series must not start at the pod's creation (the
    previous agent's series, with its higher values, started there)."""
    host_needs_v1("memory")
    a = cgroups.make("oomstart-a")
    mem_a = Cgroup(V1_MEMORY / a.path.name)
    mem_a.path.mkdir()
    cgroups.made.append(mem_a)
    created_ns = time.time_ns() - 3600 * 10**9
    ta = dataclasses.replace(target_for("a", a), created_ns=created_ns)
    memory = MemoryCollector(CgroupFS.detect("/sys/fs/cgroup"), AgentStats(), ebpf=mem_collector)
    pipeline = MetricsPipeline([memory], {"service.name": "kpod-otel"}, AgentStats())  # not closed: shared
    target = pipeline.collect([ta]).target(ta.key)
    assert target is not None
    oom = [p.start_ns for p in target.numbers(OOM_KILLS)]
    faults = [p.start_ns for p in target.numbers(MAJOR_FAULTS)]  # memory.stat: since the cgroup's creation
    # bpftool's loaded_at is the kernel's boot-time stamp put on the wall clock through /proc/stat's btime,
    # which has whole seconds: one second of slack, against an hour between creation and load.
    loaded_ns = _oom_program_loaded_at_s() * 10**9
    assert len(oom) == 1 and loaded_ns - 10**9 <= oom[0] <= time.time_ns()
    assert faults == [created_ns]
