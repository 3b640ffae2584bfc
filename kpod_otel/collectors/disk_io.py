"""DiskIOCollector: per-container block I/O from the cgroup files, cumulative as the kernel counts it.

Sources, per container cgroup, each read once per cycle:
- v2: `io.stat` (`rbytes wbytes rios wios` per `maj:min`).
- v1/hybrid: `blkio.throttle.io_service_bytes_recursive` and `blkio.throttle.io_serviced_recursive`.
  Limitation: since Linux 4.x the throttle statistics are only kept for a device on which the cgroup
  has a throttle rule; without one they stay empty. When they are empty and the blkio hierarchy has
  the BFQ files (`blkio.bfq.io_service_bytes_recursive`, BFQ scheduler, CONFIG_BFQ_CGROUP_DEBUG not
  needed for these two), those are used instead. With neither, a v1 node reports no disk I/O; the
  `_recursive` variants include a container's child cgroups.

`maj:min` is mapped to the device name through `/sys/dev/block/<maj:min>/uevent` (cached; a device
without a name is reported as its `maj:min`). Points carry `system.device` (the name) and
`kpod.device.number` (always `maj:min`), plus the container's attributes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion
from kpod_otel.cgroup.parsers import DeviceIO, parse_blkio_stat, parse_io_stat
from kpod_otel.cgroup.problems import ProblemLog
from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentKind, InstrumentSpec
from kpod_otel.model import Target
from kpod_otel.procfs.parsers import parse_uevent
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

READ_BYTES = "kpod.disk.read.bytes"
WRITTEN_BYTES = "kpod.disk.written.bytes"
READS = "kpod.disk.reads"
WRITES = "kpod.disk.writes"
DEVICE_NUMBER_ATTR = "kpod.device.number"

_C = InstrumentKind.COUNTER
DISK_INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    InstrumentSpec(READ_BYTES, _C, "By", "Bytes read from a block device by the container"),
    InstrumentSpec(WRITTEN_BYTES, _C, "By", "Bytes written to a block device by the container"),
    InstrumentSpec(READS, _C, "{operation}", "Read operations on a block device by the container"),
    InstrumentSpec(WRITES, _C, "{operation}", "Write operations on a block device by the container"),
)

_THROTTLE = ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive")
_BFQ = ("blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive")


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
    name = "disk_io"

    def __init__(self, fs: CgroupFS, stats: AgentStats, *, sys_root: str = "/sys") -> None:
        self._fs = fs
        self._problems = ProblemLog(self.name, stats, log)
        self._devices = DeviceNames(sys_root)
        blkio_root = fs.v1_dir("blkio", "")
        self._saw_device = fs.version is CgroupVersion.V2  # only v1 statistics can be silently empty
        self._explained = False
        self._has_bfq = blkio_root is not None and os.path.exists(os.path.join(blkio_root, _BFQ[0]))
        if fs.version is not CgroupVersion.V2 and blkio_root is None:
            log.warning("disk_io: no v1 blkio hierarchy is mounted: no disk I/O metrics")

    def instruments(self) -> Sequence[InstrumentSpec]:
        return DISK_INSTRUMENTS

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        snap = CollectorSnapshot()
        read_any = False
        for target in targets:
            for container in target.containers:
                per_device = self._read(target.key, container.cgroup_path)
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
            log.info("disk_io: the v1 blkio statistics of every container are empty: this kernel keeps "
                     "them only for devices with a blkio.throttle rule (or with the BFQ scheduler), so "
                     "no disk I/O is reported on this node")
        self._problems.prune(t.key for t in targets)
        return snap

    def _read(self, key: str, rel: str) -> dict[str, DeviceIO] | None:
        if self._fs.version is CgroupVersion.V2:
            path = self._fs.v2_dir(rel)
            if path is None:
                return None
            text = self._read_file(key, os.path.join(path, "io.stat"), rel)
            if text is None:
                return None
            stat = parse_io_stat(text)
            if stat.malformed:
                self._problems.report(key, "parse", f"{stat.malformed} malformed lines in io.stat",
                                      stat.malformed)
            return stat.device_io()
        blkio = self._fs.v1_dir("blkio", rel)
        if blkio is None:
            return None
        result = self._read_v1(key, rel, blkio, _THROTTLE)
        if result is not None and not result and self._has_bfq:
            result = self._read_v1(key, rel, blkio, _BFQ)
        return result

    def _read_v1(self, key: str, rel: str, directory: str,
                 files: tuple[str, str]) -> dict[str, DeviceIO] | None:
        bytes_text = self._read_file(key, os.path.join(directory, files[0]), rel)
        if bytes_text is None:
            return None
        byte_stat = parse_blkio_stat(bytes_text)
        if not byte_stat.devices and not byte_stat.malformed:
            return {}  # no device has statistics: the operations file is empty too, skip reading it
        ops_text = self._read_file(key, os.path.join(directory, files[1]), rel)
        if ops_text is None:
            return None
        op_stat = parse_blkio_stat(ops_text)
        bad = byte_stat.malformed + op_stat.malformed
        if bad:
            self._problems.report(key, "parse", f"{bad} malformed lines in {files[0]}/{files[1]}", bad)
        data_bytes, ops = byte_stat.reads_writes(), op_stat.reads_writes()
        result: dict[str, DeviceIO] = {}
        for dev in sorted(set(data_bytes) | set(ops)):
            rb, wb = data_bytes.get(dev, (0, 0))
            r, w = ops.get(dev, (0, 0))
            result[dev] = DeviceIO(read_bytes=rb, write_bytes=wb, reads=r, writes=w)
        return result

    def _read_file(self, key: str, path: str, rel: str) -> str | None:
        try:
            with open(path) as f:
                return f.read()
        except OSError as exc:
            self._problems.os_error(key, path, exc, lambda: self._fs.exists(rel))
            return None
