"""Delta temporality on a real cgroup: a process in a container cgroup writes a known number of bytes
(O_DIRECT, so every byte reaches the disk and the cgroup's blkio counters) in rounds between cycles; the
DELTA points a real receiver gets for that container add up to exactly those bytes, and to the change of
the blkio file the test reads itself."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.collectors.disk_io import DEVICE_NUMBER_ATTR, DiskIOCollector
from kpod_otel.export.exporter import OtlpExporter
from kpod_otel.export.otlp_settings import settings_from_env
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.export.temporality import TemporalityPreference
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, systemd_burstable_pod
from tests.cgroup.test_disk_io_real import CHUNK, HUGE_BPS, WRITES, data_file, whole_disk
from tests.conftest import require
from tests.export.helpers import attrs
from tests.fakes.otlp import OtlpReceiver
from tests.series_rules import SeriesChecker

__all__ = ["data_file"]  # the fixture, shared with test_disk_io_real

WRITTEN = "kpod.disk.written.bytes"
ROUNDS = (3, 5, 8)  # chunks written before cycles 2, 3 and 4: WRITES in all
assert sum(ROUNDS) == WRITES

# Writes the number of 64 KiB chunks each input line asks for, then says "done".
ROUND_WRITER = f"""
import mmap, os, sys
buf = mmap.mmap(-1, {CHUNK})
buf.write(b"k" * {CHUNK})
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
print("ready", flush=True)
offset = 0
for line in sys.stdin:
    for _ in range(int(line)):
        assert os.pwritev(fd, [buf], offset * {CHUNK}) == {CHUNK}
        offset += 1
    print("done", flush=True)
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start("grpc")
    yield r
    r.stop()


def test_delta_disk_bytes_add_up_to_the_bytes_written(cgroup_tree: CgroupTree, data_file: str,
                                                      receiver: OtlpReceiver) -> None:
    disk = whole_disk(os.stat(data_file).st_dev)
    require(os.path.exists(f"/sys/dev/block/{disk}"), f"block device {disk} of /var/tmp is not visible")
    pod = systemd_burstable_pod(cgroup_tree)
    blkio_dir = os.path.join(CGROUP_ROOT, "blkio", pod.container_path)
    rules = [os.path.join(blkio_dir, f"blkio.throttle.{kind}_bps_device") for kind in ("read", "write")]
    for rule in rules:  # v1 keeps the per-cgroup byte counts only under a throttle rule
        with open(rule, "w") as f:
            f.write(f"{disk} {HUGE_BPS}")
    try:
        proc = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", ROUND_WRITER, data_file],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"

        stats = AgentStats()
        fs = CgroupFS.detect(CGROUP_ROOT)
        targets = PodCgroupMapper(fs, stats).map([PodInfo(
            uid=pod.uid, name="db-0", namespace="data", qos_class="Burstable",
            containers=(ContainerInfo("db", pod.container_id, "containerd"),))])
        pipeline = MetricsPipeline([DiskIOCollector(fs, stats, sys_root="/sys")], {}, stats,
                                   temporality=TemporalityPreference.DELTA)
        exporter = OtlpExporter(settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}), stats)
        checker = SeriesChecker()

        def kernel_written() -> int:  # the cgroup's own count ("254:0 Write 65536" lines), read by the test
            with open(os.path.join(blkio_dir, "blkio.throttle.io_service_bytes_recursive")) as f:
                return sum(int(n) for dev, op, n in (line.split() for line in f if line.count(" ") == 2)
                           if dev == disk and op == "Write")

        def cycle() -> tuple[int, int, int]:
            """(start, time, bytes) of the one DELTA point of the container and disk the receiver got."""
            sent = len(receiver.received)
            assert exporter.export_encoded(pipeline.collect(targets).resources).ok
            request = receiver.wait_for(sent + 1)[-1].request
            checker.feed(request)
            found = [(m, dp) for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                     if m.name == WRITTEN for dp in m.sum.data_points
                     if attrs(dp.attributes).get(DEVICE_NUMBER_ATTR) == disk]
            assert len(found) == 1, found
            metric, point = found[0]
            assert metric.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
            assert attrs(point.attributes)["container.id"] == pod.container_id
            return point.start_time_unix_nano, point.time_unix_nano, point.as_int

        kernel = [kernel_written()]
        points = [cycle()]  # the container ran before this agent started: a baseline of 0
        for chunks in ROUNDS:
            proc.stdin.write(f"{chunks}\n".encode())
            proc.stdin.flush()
            assert proc.stdout.readline() == b"done\n"
            kernel.append(kernel_written())
            points.append(cycle())
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0

        deltas = [p[2] for p in points]
        assert deltas == [0, *(n * CHUNK for n in ROUNDS)]  # exactly the bytes of each round
        assert sum(deltas) == CHUNK * WRITES == kernel[-1] - kernel[0]
        assert deltas[1:] == [b - a for a, b in itertools.pairwise(kernel)]
        assert all(b[0] == a[1] for a, b in itertools.pairwise(points))  # contiguous
        assert not checker.violations, checker.violations
        assert stats.total("kpod.agent.errors") == 0
    finally:
        for rule in rules:
            with open(rule, "w") as f:
                f.write(f"{disk} 0")
