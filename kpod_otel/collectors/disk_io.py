"""DiskIOCollector (`disk`): per-container block I/O from the cgroup files, cumulative as the kernel counts it.

The records come from `CgroupFiles.io` (v2 `io.stat`; v1 `blkio.throttle.*_recursive` or the BFQ files).
Limitation on v1: since Linux 4.x the throttle statistics are only kept for a device on which the cgroup has
a throttle rule and, without the BFQ scheduler, a v1 node reports no disk I/O (logged once).

`maj:min` is mapped to the device name through `/sys/dev/block/<maj:min>/uevent` (cached; a device
without a name is reported as its `maj:min`). Points carry `system.device` (the name) and
`kpod.device.number` (always `maj:min`), plus the container's attributes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from kpod_otel.catalog import specs
from kpod_otel.cgroup.files import CgroupFiles
from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.problems import ErrorCounter, ProblemLog
from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentSpec
from kpod_otel.model import Target
from kpod_otel.procfs.parsers import parse_uevent

log = logging.getLogger(__name__)

READ_BYTES = "kpod.disk.read.bytes"
WRITTEN_BYTES = "kpod.disk.written.bytes"
READS = "kpod.disk.reads"
WRITES = "kpod.disk.writes"
DEVICE_NUMBER_ATTR = "kpod.device.number"


class DeviceNames:
    """maj:min -> kernel device name, from /sys/dev/block/<maj:min>/uevent, cached for the process."""

    def __init__(self, sys_root: str = "/sys") -> None:
        self._sys_root = sys_root
        self._names: dict[str, str] = {}

    def name(self, majmin: str) -> str:
        cached = self._names.get(majmin)
        if cached is not None:
            return cached
        try:
            with open(os.path.join(self._sys_root, "dev", "block", majmin, "uevent")) as f:
                name = parse_uevent(f.read()).devname or majmin
        except OSError:
            name = majmin  # not a block device we can see (or gone): still report it, by number
        self._names[majmin] = name
        return name


class DiskIOCollector(Collector):
    name = "disk"

    def __init__(self, fs: CgroupFS, stats: ErrorCounter, *, sys_root: str = "/sys") -> None:
        self._files = CgroupFiles(fs, ProblemLog(self.name, stats, log))
        self._devices = DeviceNames(sys_root)
        self._saw_device = not self._files.v1  # only v1 statistics can be silently empty
        self._explained = False
        self._problems = self._files.problems
        if self._files.v1 and not self._files.has_controller("blkio"):
            log.warning("disk: no v1 blkio hierarchy is mounted: no disk I/O metrics")

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(READ_BYTES, WRITTEN_BYTES, READS, WRITES)

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        snap = CollectorSnapshot()
        read_any = False
        for target in targets:
            for container in target.containers:
                per_device = self._files.io(target.key, container.cgroup_path)
                if per_device is None:
                    continue
                read_any = True
                self._saw_device = self._saw_device or bool(per_device)
                base = container.attributes()
                for majmin, io in per_device.items():
                    attrs = {**base, "system.device": self._devices.name(majmin), DEVICE_NUMBER_ATTR: majmin}
                    snap.add(target.key, READ_BYTES, io.read_bytes, attrs)
                    snap.add(target.key, WRITTEN_BYTES, io.write_bytes, attrs)
                    snap.add(target.key, READS, io.reads, attrs)
                    snap.add(target.key, WRITES, io.writes, attrs)
        if read_any and not self._saw_device and not self._explained:
            self._explained = True
            log.info("disk: the v1 blkio statistics of every container are empty: this kernel keeps "
                     "them only for devices with a blkio.throttle rule (or with the BFQ scheduler), so "
                     "no disk I/O is reported on this node")
        self._problems.prune(t.key for t in targets)
        return snap

    def close(self) -> None:
        self._problems.close()
