"""The collectors' cgroup v2 code paths on a prepared v2 tree holding the real-format v2 fixtures (this
machine's cgroup2 hierarchy has no controllers, so io.stat and memory.* cannot exist here live)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion, layout_from_markers
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.collector import Observation
from kpod_otel.collectors.cpu import CPU_LIMIT, CPU_TIME, PERIODS, THROTTLED_PERIODS, THROTTLED_TIME, CpuCollector
from kpod_otel.collectors.disk_io import DEVICE_NUMBER_ATTR, DiskIOCollector
from kpod_otel.collectors.memory import (
    CACHE,
    LIMIT,
    MAJOR_FAULTS,
    OOM_KILLS,
    RSS,
    STALL_TIME,
    USAGE,
    WORKING_SET,
    MemoryCollector,
)
from kpod_otel.model import AttrValue, ContainerInfo, PodInfo, Target
from kpod_otel.selfmetrics import AgentStats

V2 = Path(__file__).parent.parent / "fixtures" / "cgroup" / "v2"
USAGE_METRICS = {USAGE, WORKING_SET, RSS, CACHE, LIMIT, STALL_TIME}
UID = "5f0e2a4c-1b7d-4c3e-9a8b-0d1e2f3a4b5c"
CID = "e" * 64


FILES = ("io.stat", "memory.stat", "memory.events", "cpu.stat", "memory.current", "memory.max", "cpu.max",
         "cpu.pressure", "memory.pressure", "io.pressure")


def prepared(tmp_path: Path) -> tuple[CgroupFS, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    qos = root / "kubepods.slice" / "kubepods-besteffort.slice"
    pod = qos / f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice"
    container = pod / f"cri-containerd-{CID}.scope"
    container.mkdir(parents=True)
    for name in FILES:
        shutil.copy(V2 / name, container / name)
    (container / "cgroup.procs").write_text("")
    layout = layout_from_markers(str(root))
    assert layout is not None and layout.version is CgroupVersion.V2
    return CgroupFS(layout), container


def test_disk_and_memory_from_v2_files(tmp_path: Path) -> None:
    fs, _ = prepared(tmp_path)
    # device names come from a prepared /sys as well: one named device, two without a uevent
    sys_root = tmp_path / "sys"
    (sys_root / "dev" / "block" / "259:0").mkdir(parents=True)
    (sys_root / "dev" / "block" / "259:0" / "uevent").write_text(
        "MAJOR=259\nMINOR=0\nDEVNAME=nvme0n1\nDEVTYPE=disk\nDISKSEQ=1\n")
    stats = AgentStats()
    targets = PodCgroupMapper(fs, stats).map([PodInfo(
        uid=UID, name="p", namespace="n", qos_class="BestEffort",
        containers=(ContainerInfo("app", CID, "containerd"),))])

    disk = DiskIOCollector(fs, stats, sys_root=str(sys_root)).collect(targets).points[UID]
    read_bytes = {(o.attributes["system.device"], o.attributes[DEVICE_NUMBER_ATTR]): o.value
                  for o in disk["kpod.disk.read.bytes"]}
    assert read_bytes == {("nvme0n1", "259:0"): 2392064, ("253:0", "253:0"): 2392064, ("7:3", "7:3"): 1024}
    writes = {o.attributes[DEVICE_NUMBER_ATTR]: o.value for o in disk["kpod.disk.writes"]}
    assert writes == {"259:0": 9163, "253:0": 9163, "7:3": 0}
    assert all(o.attributes["container.id"] == CID and o.attributes["k8s.container.name"] == "app"
               for obs in disk.values() for o in obs)

    memory = MemoryCollector(fs, stats).collect(targets).points[UID]
    assert [o.value for o in memory[OOM_KILLS]] == [3]
    assert [o.value for o in memory[MAJOR_FAULTS]] == [1611]
    assert [o.value for o in memory[USAGE]] == [55406592]  # memory.current
    assert stats.total("kpod.agent.errors") == 0


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    fs, container = prepared(tmp_path)
    (container / "io.stat").write_text("259:0 rbytes=5 wbytes=6 rios=1 wios=2\nnot a line\n")
    (container / "memory.events").write_text("oom_kill 2\noom_kill_bogus\n")
    stats = AgentStats()
    targets = PodCgroupMapper(fs, stats).map([PodInfo(
        uid=UID, name="p", namespace="n", containers=(ContainerInfo("app", CID),))])
    disk = DiskIOCollector(fs, stats, sys_root=str(tmp_path)).collect(targets).points[UID]
    assert [o.value for o in disk["kpod.disk.read.bytes"]] == [5]
    memory = MemoryCollector(fs, stats).collect(targets).points[UID]
    assert [o.value for o in memory[OOM_KILLS]] == [2]
    assert stats.get("kpod.agent.errors", **{"kpod.component": "disk", "error.type": "parse"}) == 1
    assert stats.get("kpod.agent.errors", **{"kpod.component": "memory", "error.type": "parse"}) == 1


def test_vanished_pod_loses_only_its_points_and_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fs, container = prepared(tmp_path)
    other_uid = "0a0b0c0d-0000-4000-8000-000000000001"
    other_cid = "f" * 64
    other = (container.parent.parent / f"kubepods-besteffort-pod{other_uid.replace('-', '_')}.slice"
             / f"cri-containerd-{other_cid}.scope")
    other.mkdir(parents=True)
    for name in FILES:
        shutil.copy(V2 / name, other / name)
    stats = AgentStats()
    targets = PodCgroupMapper(fs, stats).map([
        PodInfo(uid=UID, name="a", namespace="n", containers=(ContainerInfo("app", CID),)),
        PodInfo(uid=other_uid, name="b", namespace="n", containers=(ContainerInfo("app", other_cid),)),
    ])
    shutil.rmtree(container)  # the first pod is deleted after discovery, before the collectors run
    (other / "memory.events").unlink()  # a file the kernel does not provide for that cgroup
    disk, memory = DiskIOCollector(fs, stats, sys_root=str(tmp_path)), MemoryCollector(fs, stats)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert set(disk.collect(targets).points) == {other_uid}
        mem_points = memory.collect(targets).points
        assert set(mem_points) == {other_uid}
        assert set(mem_points[other_uid]) == {MAJOR_FAULTS, *USAGE_METRICS}

    def errors(component: str, kind: str) -> float:
        return stats.get("kpod.agent.errors", **{"kpod.component": component, "error.type": kind})

    assert errors("disk", "vanished") == 3
    assert errors("memory", "vanished") == 3  # memory.current, three cycles (its other files are not tried)
    assert errors("memory", "unsupported") == 3
    vanished_logs = [r for r in caplog.records if UID in r.getMessage()]
    assert len(vanished_logs) == 2  # once per collector, not once per cycle or file


def test_static_pod_resolves_through_its_kubelet_uid(tmp_path: Path) -> None:
    # The tree is named after the kubelet's uid; the Resource keeps the API server's (mirror) uid.
    fs, _ = prepared(tmp_path)
    mirror_uid = "9a8b7c6d-0000-4000-8000-000000000001"
    targets = PodCgroupMapper(fs, AgentStats(), kubelet_root="/var/lib/kubelet").map([PodInfo(
        uid=mirror_uid, kubelet_uid=UID, name="etcd", namespace="kube-system", qos_class="BestEffort",
        containers=(ContainerInfo("etcd", CID, "containerd"),))])
    (target,) = targets
    assert target.resource["k8s.pod.uid"] == mirror_uid
    assert target.cgroup_path.endswith(f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice")
    assert [c.container_id for c in target.containers] == [CID]
    assert target.volumes_dir == f"/var/lib/kubelet/pods/{UID}/volumes"


def values(points: dict[str, list[Observation]], metric: str, *attrs: str) -> dict[tuple[AttrValue, ...], float]:
    return {tuple(o.attributes[a] for a in attrs): o.value for o in points[metric]}


def pod_targets(fs: CgroupFS, stats: AgentStats) -> list[Target]:
    return PodCgroupMapper(fs, stats).map([PodInfo(
        uid=UID, name="p", namespace="n", qos_class="BestEffort",
        containers=(ContainerInfo("app", CID, "containerd"),))])


def test_cpu_time_throttling_and_limit_from_v2_files(tmp_path: Path) -> None:
    fs, _ = prepared(tmp_path)
    stats = AgentStats()
    cpu = CpuCollector(fs, stats).collect(pod_targets(fs, stats)).points[UID]
    # cpu.stat: user_usec 1587230, system_usec 774211, nr_periods 1203, nr_throttled 17, throttled_usec 912332
    assert values(cpu, CPU_TIME, "cpu.mode") == {("user",): 1.58723, ("system",): 0.774211}
    assert values(cpu, PERIODS) == {(): 1203} and values(cpu, THROTTLED_PERIODS) == {(): 17}
    assert values(cpu, THROTTLED_TIME) == {(): 0.912332}
    assert values(cpu, CPU_LIMIT) == {(): 0.5}  # cpu.max "50000 100000"
    assert all(o.attributes["container.id"] == CID for obs in cpu.values() for o in obs)
    assert stats.total("kpod.agent.errors") == 0


def test_memory_usage_working_set_limit_and_pressure_from_v2_files(tmp_path: Path) -> None:
    fs, _ = prepared(tmp_path)
    stats = AgentStats()
    memory = MemoryCollector(fs, stats).collect(pod_targets(fs, stats)).points[UID]
    assert values(memory, USAGE) == {(): 55406592}  # memory.current
    assert values(memory, WORKING_SET) == {(): 55406592 - 5890048}  # minus memory.stat inactive_file
    assert values(memory, RSS) == {(): 41713664} and values(memory, CACHE) == {(): 9691136}  # anon, file
    assert values(memory, LIMIT) == {(): 268435456}  # memory.max
    stall = values(memory, STALL_TIME, "kpod.pressure.resource", "kpod.pressure.type")
    assert stall == {("cpu", "some"): 25.589648, ("cpu", "full"): 0.0,
                     ("memory", "some"): 0.162116, ("memory", "full"): 0.153917,
                     ("io", "some"): 7.633881, ("io", "full"): 6.760186}
    assert stats.total("kpod.agent.errors") == 0


def test_working_set_is_floored_at_zero(tmp_path: Path) -> None:
    fs, container = prepared(tmp_path)
    (container / "memory.current").write_text("4096\n")  # less than inactive_file (lazily flushed stats)
    stats = AgentStats()
    memory = MemoryCollector(fs, stats).collect(pod_targets(fs, stats)).points[UID]
    assert values(memory, USAGE) == {(): 4096} and values(memory, WORKING_SET) == {(): 0}


def test_unlimited_and_no_psi(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No limit: no limit point. No PSI (CONFIG_PSI off, psi=0, cgroup.pressure 0): no pressure points, one
    log line per file and one unsupported error per container and file, however many cycles run."""
    fs, container = prepared(tmp_path)
    (container / "cpu.max").write_text((V2 / "cpu.max.unlimited").read_text())
    (container / "memory.max").write_text((V2 / "memory.max.unlimited").read_text())
    for resource in ("cpu", "memory", "io"):
        (container / f"{resource}.pressure").unlink()
    stats = AgentStats()
    targets = pod_targets(fs, stats)
    cpu, memory = CpuCollector(fs, stats), MemoryCollector(fs, stats)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        cpu_points = cpu.collect(targets).points[UID]
        mem_points = memory.collect(targets).points[UID]
        assert CPU_LIMIT not in cpu_points and CPU_TIME in cpu_points
        assert LIMIT not in mem_points and STALL_TIME not in mem_points and USAGE in mem_points
    assert stats.get("kpod.agent.errors", **{"kpod.component": "memory", "error.type": "unsupported"}) == 3
    assert stats.total("kpod.agent.errors") == 3
    logged = [r.getMessage() for r in caplog.records if ".pressure" in r.getMessage()]
    assert len(logged) == 3 and {m.split()[1] for m in logged} == {"cpu.pressure", "memory.pressure", "io.pressure"}


def test_v1_without_cpuacct_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A v1 node with cpu but no cpuacct hierarchy: throttling is reported, CPU time is not, with one log
    line and one self-metric for the node."""
    root = tmp_path / "cgroup"
    container_rel = (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice"
                     f"/cri-containerd-{CID}.scope")
    for controller in ("cpu", "memory"):
        (root / controller).mkdir(parents=True)
        (root / controller / "cgroup.procs").write_text("")
        (root / controller / container_rel).mkdir(parents=True)
    (root / "cpu" / container_rel / "cpu.stat").write_text(
        "nr_periods 40\nnr_throttled 9\nthrottled_time 1250000000\nnr_bursts 0\nburst_time 0\n")
    (root / "cpu" / container_rel / "cpu.cfs_quota_us").write_text("150000\n")
    (root / "cpu" / container_rel / "cpu.cfs_period_us").write_text("100000\n")
    layout = layout_from_markers(str(root))
    assert layout is not None and layout.version is CgroupVersion.V1
    fs, stats = CgroupFS(layout), AgentStats()
    caplog.set_level(logging.INFO)
    collector = CpuCollector(fs, stats)
    targets = pod_targets(fs, stats)
    for _ in range(3):
        points = collector.collect(targets).points[UID]
        assert CPU_TIME not in points
        assert values(points, PERIODS) == {(): 40} and values(points, THROTTLED_PERIODS) == {(): 9}
        assert values(points, THROTTLED_TIME) == {(): 1.25}  # throttled_time is ns in v1
        assert values(points, CPU_LIMIT) == {(): 1.5}
    assert stats.total("kpod.agent.errors") == 1
    assert len([r for r in caplog.records if "cpuacct" in r.getMessage()]) == 1
