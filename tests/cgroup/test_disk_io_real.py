"""DiskIOCollector on a real v1 blkio cgroup: a process in a container cgroup does O_DIRECT I/O of a
known size on this machine's disk; the collector reports exactly those bytes for that container."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.cgroup.parsers import parse_blkio_stat
from kpod_otel.collectors.disk_io import DEVICE_NUMBER_ATTR, DiskIOCollector
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.procfs.parsers import parse_uevent
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, systemd_burstable_pod
from tests.conftest import require

CHUNK = 64 * 1024
WRITES = 16
READS = 8
# a throttle rule no test will ever reach (1 TiB/s): it only switches the v1 statistics on
HUGE_BPS = 1 << 40

DIRECT_IO = f"""
import mmap, os, sys
path = sys.argv[1]
buf = mmap.mmap(-1, {CHUNK})
buf.write(b"k" * {CHUNK})
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
print("ready", flush=True)
sys.stdin.readline()  # the test reads the counters before the measured I/O starts
for i in range({WRITES}):
    assert os.pwritev(fd, [buf], i * {CHUNK}) == {CHUNK}
for i in range({READS}):
    assert os.preadv(fd, [buf], i * {CHUNK}) == {CHUNK}
os.close(fd)
print("done", flush=True)
"""


def whole_disk(dev: int) -> str:
    """maj:min of the disk that holds `dev` (throttle rules exist on whole disks, not partitions)."""
    majmin = f"{os.major(dev)}:{os.minor(dev)}"
    sysdir = f"/sys/dev/block/{majmin}"
    if os.path.exists(os.path.join(sysdir, "partition")):
        with open(os.path.join(os.path.realpath(sysdir), "..", "dev")) as f:
            return f.read().strip()
    return majmin


@pytest.fixture
def data_file() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="kpt-cg-disk-", dir="/var/tmp")
    path = os.path.join(directory, "data")
    with open(path, "wb") as f:  # allocated and on disk before the measured process runs
        f.write(b"\0" * CHUNK * WRITES)
        f.flush()
        os.fsync(f.fileno())
    yield path
    os.unlink(path)
    os.rmdir(directory)


def test_direct_io_bytes_and_operations(cgroup_tree: CgroupTree, data_file: str) -> None:
    disk = whole_disk(os.stat(data_file).st_dev)
    require(os.path.exists(f"/sys/dev/block/{disk}"), f"block device {disk} of /var/tmp is not visible")
    pod = systemd_burstable_pod(cgroup_tree)
    blkio_dir = os.path.join(CGROUP_ROOT, "blkio", pod.container_path)
    rules = [os.path.join(blkio_dir, f"blkio.throttle.{kind}_bps_device") for kind in ("read", "write")]
    for rule in rules:
        with open(rule, "w") as f:
            f.write(f"{disk} {HUGE_BPS}")
    try:
        proc = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", DIRECT_IO, data_file],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"

        fs = CgroupFS.detect(CGROUP_ROOT)
        stats = AgentStats()
        mapper = PodCgroupMapper(fs, stats)
        targets = mapper.map([PodInfo(uid=pod.uid, name="db-0", namespace="data", qos_class="Burstable",
                                      containers=(ContainerInfo("db", pod.container_id, "containerd"),))])
        collector = DiskIOCollector(fs, stats, sys_root="/sys")
        with open(f"/sys/dev/block/{disk}/uevent") as f:
            name = parse_uevent(f.read()).devname
        assert name

        def values() -> dict[str, int]:
            points = collector.collect(targets).points.get(pod.uid, {})
            out = {}
            for metric in ("kpod.disk.read.bytes", "kpod.disk.written.bytes", "kpod.disk.reads",
                           "kpod.disk.writes"):
                matching = [o for o in points.get(metric, []) if o.attributes[DEVICE_NUMBER_ATTR] == disk]
                for obs in matching:
                    assert obs.attributes["system.device"] == name
                    assert obs.attributes["container.id"] == pod.container_id
                    assert obs.attributes["k8s.container.name"] == "db"
                out[metric] = int(matching[0].value) if matching else 0
            return out

        def kernel_ops() -> tuple[int, int]:
            with open(os.path.join(blkio_dir, "blkio.throttle.io_serviced_recursive")) as f:
                return parse_blkio_stat(f.read()).reads_writes().get(disk, (0, 0))

        before, ops_before = values(), kernel_ops()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"done\n"
        assert proc.wait(timeout=60) == 0
        after, ops_after = values(), kernel_ops()

        # the bytes the test process moved, exactly (cumulative counters: compare the increase)
        assert after["kpod.disk.written.bytes"] - before["kpod.disk.written.bytes"] == CHUNK * WRITES
        assert after["kpod.disk.read.bytes"] - before["kpod.disk.read.bytes"] == CHUNK * READS
        # operations: what the kernel counted (one or more bios per 64 KiB request)
        assert (after["kpod.disk.reads"], after["kpod.disk.writes"]) == ops_after
        assert after["kpod.disk.writes"] - before["kpod.disk.writes"] >= WRITES
        assert after["kpod.disk.reads"] - before["kpod.disk.reads"] >= READS
        assert ops_after[1] - ops_before[1] >= WRITES
        assert stats.total("kpod.agent.errors") == 0
    finally:
        for rule in rules:
            with open(rule, "w") as f:
                f.write(f"{disk} 0")


def test_vanished_container_loses_only_its_points(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    mapper = PodCgroupMapper(fs, stats)
    targets = mapper.map([PodInfo(uid=pod.uid, name="a", namespace="n",
                                  containers=(ContainerInfo("c", pod.container_id, "containerd"),))])
    for h in ("memory", "blkio", "cpu", "pids", "unified"):
        os.rmdir(os.path.join(CGROUP_ROOT, h, pod.container_path))
    snap = DiskIOCollector(fs, stats).collect(targets)
    assert pod.uid not in snap.points
    assert stats.get("kpod.agent.errors", **{"kpod.component": "disk", "error.type": "vanished"}) == 1


def test_cgroup_missing_from_the_blkio_hierarchy_is_unsupported_not_vanished(cgroup_tree: CgroupTree) -> None:
    # v1 controllers have separate trees: this pod exists everywhere but in blkio
    uid = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
    pod = f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid.replace('-', '_')}.slice"
    cid = "d" * 64
    without_blkio = ("memory", "cpu", "pids", "unified")
    cgroup_tree.make(f"{pod}/cri-containerd-{cid}.scope", without_blkio)
    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    targets = PodCgroupMapper(fs, stats).map([PodInfo(uid=uid, name="a", namespace="n",
                                                      containers=(ContainerInfo("c", cid),))])
    assert targets[0].containers
    assert DiskIOCollector(fs, stats).collect(targets).points == {}
    assert stats.get("kpod.agent.errors", **{"kpod.component": "disk", "error.type": "unsupported"}) == 1
    assert stats.get("kpod.agent.errors", **{"kpod.component": "disk", "error.type": "vanished"}) == 0
