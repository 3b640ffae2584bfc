"""An agent (re)started after a container already wrote data never exports those bytes under a start
time later than the write: a real container cgroup (v1 blkio statistics switched on by a throttle rule
no test reaches), O_DIRECT writes of a known size by a process in it, and the agent's pipeline built
afresh for each start, as a new process builds it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.collectors.disk_io import DEVICE_NUMBER_ATTR, WRITTEN_BYTES, DiskIOCollector
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.selfmetrics import AgentStats, SelfMetricsCollector
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, systemd_burstable_pod
from tests.cgroup.test_disk_io_real import CHUNK, HUGE_BPS, data_file, whole_disk  # noqa: F401 (fixture)
from tests.conftest import require
from tests.series_rules import SeriesChecker

WRITES = 16  # 1 MiB per burst

WRITER = f"""
import mmap, os, sys
buf = mmap.mmap(-1, {CHUNK})
buf.write(b"k" * {CHUNK})
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
for line in sys.stdin:
    for i in range({WRITES}):
        assert os.pwritev(fd, [buf], i * {CHUNK}) == {CHUNK}
    print("done", flush=True)
"""


class Writer:
    def __init__(self, tree: CgroupTree, rel: str, path: str) -> None:
        self.proc = tree.spawn(rel, [PYTHON, "-c", WRITER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def burst(self) -> tuple[int, int]:
        """One burst of WRITES x CHUNK bytes; returns (ns before, ns after)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        t0 = time.time_ns()
        self.proc.stdin.write(b"w\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == b"done\n"
        return t0, time.time_ns()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def throttled(cgroup_tree: CgroupTree, data_file: str) -> Iterator[tuple[str, str, object]]:  # noqa: F811
    disk = whole_disk(os.stat(data_file).st_dev)
    require(os.path.exists(f"/sys/dev/block/{disk}"), f"block device {disk} of /var/tmp is not visible")
    created_ns = time.time_ns() // 10**9 * 10**9  # the pod object, as the API server stamps it
    pod = systemd_burstable_pod(cgroup_tree)
    rules = [os.path.join(CGROUP_ROOT, "blkio", pod.container_path, f"blkio.throttle.{k}_bps_device")
             for k in ("read", "write")]
    for rule in rules:
        with open(rule, "w") as f:
            f.write(f"{disk} {HUGE_BPS}")
    writer = Writer(cgroup_tree, pod.container_path, data_file)
    try:
        yield disk, pod.uid, (pod, writer, created_ns)
    finally:
        writer.stop()
        for rule in rules:
            with open(rule, "w") as f:
                f.write(f"{disk} 0")


class AgentProcess:
    """What one agent process holds: a mapper, the disk collector and the pipeline."""

    def __init__(self, pod: PodInfo) -> None:
        fs = CgroupFS.detect(CGROUP_ROOT)
        self.stats = AgentStats()
        self.mapper = PodCgroupMapper(fs, self.stats)
        self.pipeline = MetricsPipeline([DiskIOCollector(fs, self.stats), SelfMetricsCollector(self.stats)],
                                        {"service.name": "kpod-otel"}, self.stats)
        self.pod = pod

    def written(self, disk: str, checker: SeriesChecker) -> tuple[int, int | float, int]:
        """(start, value, time) of the container's kpod.disk.written.bytes point on `disk`."""
        result = self.pipeline.collect(self.mapper.map([self.pod]))
        checker.feed(result.request)
        target = result.target(self.pod.uid)
        assert target is not None
        points = [p for p in target.numbers(WRITTEN_BYTES) if dict(p.attributes)[DEVICE_NUMBER_ATTR] == disk]
        assert len(points) == 1
        return points[0].start_ns, points[0].value, result.time_ns


@pytest.mark.parametrize("known_creation", [False, True], ids=["creation-unknown", "pod-creation-time"])
def test_restart_never_exports_pre_start_bytes(throttled: tuple[str, str, object], known_creation: bool) -> None:
    disk, uid, extra = throttled
    kube_pod, writer, created_ns = extra  # type: ignore[misc]
    info = PodInfo(uid=uid, name="db-0", namespace="data", qos_class="Burstable",
                   containers=(ContainerInfo("db", kube_pod.container_id, "containerd"),),
                   created_ns=created_ns if known_creation else 0)
    burst = CHUNK * WRITES
    checker = SeriesChecker()

    first_write = writer.burst()  # before any agent runs
    agent = AgentProcess(info)
    start, value, _ = agent.written(disk, checker)
    if known_creation:
        # the kernel counted since the cgroup was made, after the pod object: the whole value, under
        # a start time before the write
        assert start == created_ns <= first_write[0] and value >= burst
    else:
        # unknown: the first observation is the baseline; the earlier write is never an increase
        assert start > first_write[1] and value == 0
    base = value
    writer.burst()
    start2, value2, _ = agent.written(disk, checker)
    assert start2 == start and value2 - base == burst  # exactly the bytes written meanwhile

    # the agent restarts (a new process: nothing remembered)
    agent = AgentProcess(info)
    restart_ns = time.time_ns()
    start3, value3, _ = agent.written(disk, checker)
    if known_creation:
        assert start3 == created_ns and value3 >= 2 * burst
    else:
        assert start3 >= restart_ns and value3 == 0
    writer.burst()
    start4, value4, _ = agent.written(disk, checker)
    assert start4 == start3 and value4 - value3 == burst
    assert not checker.violations, checker.violations
