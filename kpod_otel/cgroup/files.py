"""Typed reads of a cgroup's files, whatever the node's layout: v2, v1, hybrid, blkio throttle or BFQ.

A collector asks for a record (`io`, `memory_events`, `memory_stat`, `cpu_stat`) of a cgroup path and gets it
in v2 terms, or None when it could not be read; which file of which hierarchy holds it, and how the v1 files
translate, is decided here. Every read goes through the collector's `ProblemLog` (vanished, unsupported,
unreadable and malformed files are counted and logged the same way everywhere).

Adding a cgroup-file metric: a parser in `parsers.py` (text -> record), a method here (which file, per
version), the catalog entry, and a line in the collector that maps the record's field to the metric.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion
from kpod_otel.cgroup.parsers import (
    CpuStat,
    DeviceIO,
    MemoryEvents,
    MemoryStat,
    SingleValue,
    cpu_stat_from_v1,
    device_io_from_blkio,
    parse_blkio_stat,
    parse_cpu_stat,
    parse_io_stat,
    parse_memory_events,
    parse_memory_stat,
    parse_single_value,
)
from kpod_otel.cgroup.problems import ProblemLog, R

# v1 blkio: the throttle statistics, and the BFQ scheduler's files of the same shape (the `_recursive`
# variants include a cgroup's children, as v2's io.stat does).
_THROTTLE = ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive")
_BFQ = ("blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive")


class CgroupFiles:
    """Reads of cgroup files by relative cgroup path (see `CgroupFS`), accounted to a target key."""

    def __init__(self, fs: CgroupFS, problems: ProblemLog) -> None:
        self.fs = fs
        self.problems = problems
        blkio_root = fs.v1_dir("blkio", "")
        self._has_bfq = blkio_root is not None and os.path.exists(os.path.join(blkio_root, _BFQ[0]))

    @property
    def v1(self) -> bool:
        """Controllers are v1 (v1 or hybrid): some statistics can be silently empty there."""
        return self.fs.version is not CgroupVersion.V2

    def has_controller(self, controller: str) -> bool:
        return self.fs.controller_dir(controller, "") is not None

    def read(self, key: str, rel: str, controller: str, name: str, parse: Callable[[str], R]) -> R | None:
        """`parse` of the file `name` of cgroup `rel` in `controller`'s hierarchy (the v2 directory on v2);
        None when that controller is not mounted or the file cannot be read."""
        directory = self.fs.controller_dir(controller, rel)
        if directory is None:
            return None
        return self.problems.read_parsed(key, os.path.join(directory, name), parse, lambda: self.fs.exists(rel))

    def io(self, key: str, rel: str) -> dict[str, DeviceIO] | None:
        """Cumulative block I/O per `maj:min`: v2 `io.stat`; v1 `blkio.throttle.*_recursive`, or the BFQ
        files when the throttle ones are empty (the kernel fills those only for devices with a throttle
        rule). {} when no device has statistics."""
        if not self.v1:
            stat = self.read(key, rel, "io", "io.stat", parse_io_stat)
            return None if stat is None else stat.device_io()
        result = self._blkio(key, rel, _THROTTLE)
        if result is not None and not result and self._has_bfq:
            result = self._blkio(key, rel, _BFQ)
        return result

    def _blkio(self, key: str, rel: str, files: tuple[str, str]) -> dict[str, DeviceIO] | None:
        service_bytes = self.read(key, rel, "blkio", files[0], parse_blkio_stat)
        if service_bytes is None:
            return None
        if not service_bytes.devices and not service_bytes.malformed:
            return {}  # no device has statistics: the operations file is empty too, skip reading it
        serviced = self.read(key, rel, "blkio", files[1], parse_blkio_stat)
        if serviced is None:
            return None
        return device_io_from_blkio(service_bytes, serviced)

    def memory_events(self, key: str, rel: str) -> MemoryEvents | None:
        """v2 `memory.events` (hierarchical); v1 `memory.oom_control` (its `oom_kill`)."""
        return self.read(key, rel, "memory", "memory.oom_control" if self.v1 else "memory.events",
                         parse_memory_events)

    def memory_stat(self, key: str, rel: str) -> MemoryStat | None:
        """`memory.stat` (v1 or v2; `MemoryStat` hides the v1 `total_*` spelling)."""
        return self.read(key, rel, "memory", "memory.stat", parse_memory_stat)

    def memory_usage(self, key: str, rel: str) -> SingleValue | None:
        """Bytes charged to the cgroup and its descendants: v2 `memory.current`, v1 `memory.usage_in_bytes`."""
        return self.read(key, rel, "memory", "memory.usage_in_bytes" if self.v1 else "memory.current",
                         parse_single_value)

    def cpu_stat(self, key: str, rel: str) -> CpuStat | None:
        """v2 `cpu.stat`; v1 `cpu.stat` (throttling) with `cpuacct.usage` (time), in v2 terms."""
        if not self.v1:
            return self.read(key, rel, "cpu", "cpu.stat", parse_cpu_stat)
        throttling = self.read(key, rel, "cpu", "cpu.stat", parse_cpu_stat)
        if throttling is None:
            return None
        usage = self.read(key, rel, "cpuacct", "cpuacct.usage", parse_single_value)
        if usage is None:
            return None
        return cpu_stat_from_v1(throttling, usage)
