"""Typed reads of a cgroup's files, whatever the node's layout: v2, v1, hybrid, blkio throttle or BFQ.

A collector asks for a record (`io`, `memory_events`, `memory_stat`, `memory_usage`, `memory_limit`, `cpu_stat`,
`cpu_quota`, `pressure`) of a cgroup path and gets it
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
    CpuQuota,
    CpuStat,
    DeviceIO,
    MemoryEvents,
    MemoryLimit,
    MemoryStat,
    Pressure,
    SingleValue,
    cpu_stat_from_v1,
    cpuacct_time,
    device_io_from_blkio,
    parse_blkio_stat,
    parse_cfs_quota_us,
    parse_cpu_max,
    parse_cpu_stat,
    parse_io_stat,
    parse_memory_events,
    parse_memory_limit_in_bytes,
    parse_memory_max,
    parse_memory_stat,
    parse_pressure,
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
        self._kept = problems.kept
        self._bases: dict[str, str | None] = {}
        blkio_root = fs.v1_dir("blkio", "")
        self._has_bfq = blkio_root is not None and os.path.exists(os.path.join(blkio_root, _BFQ[0]))

    @property
    def v1(self) -> bool:
        """Controllers are v1 (v1 or hybrid): some statistics can be silently empty there."""
        return self.fs.version is not CgroupVersion.V2

    def has_controller(self, controller: str) -> bool:
        return self.fs.controller_dir(controller, "") is not None

    def read(self, key: str, rel: str, controller: str, name: str, parse: Callable[[str], R],
             optional: bool = False) -> R | None:
        """`parse` of the file `name` of cgroup `rel` in `controller`'s hierarchy (the v2 directory on v2,
        `controller` "unified": the v2 tree, also on hybrid nodes); None when that hierarchy is not mounted or
        the file cannot be read. `optional`: a file the kernel may not have (see `ProblemLog`)."""
        if controller not in self._bases:  # once per controller: where its hierarchy is (None: not mounted)
            self._bases[controller] = (self.fs.v2_dir("") if controller == "unified"
                                       else self.fs.controller_dir(controller, ""))
        base = self._bases[controller]
        if base is None:
            return None
        rel = rel.strip("/")
        path = f"{base}/{rel}/{name}" if rel else f"{base}/{name}"  # thousands per cycle: no os.path.join
        text = self._kept.read(path)  # the usual case: a file kept open (an absent file never is)
        if text is not None:
            return self.problems.parsed(key, path, parse(text))
        return self.problems.read_parsed(key, path, parse, lambda: self.fs.exists(rel), optional, keep=True)

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

    def memory_limit(self, key: str, rel: str) -> MemoryLimit | None:
        """v2 `memory.max`; v1 `memory.limit_in_bytes` (its "unlimited" is a huge number: bytes None)."""
        if self.v1:
            return self.read(key, rel, "memory", "memory.limit_in_bytes", parse_memory_limit_in_bytes)
        return self.read(key, rel, "memory", "memory.max", parse_memory_max)

    def cpu_stat(self, key: str, rel: str, in_v2_tree: bool | None = None, throttling: bool = True) -> CpuStat | None:
        """CPU time and throttling in v2 `cpu.stat` terms. v2: `cpu.stat`. v1 and hybrid: CPU time from the v2
        tree's `cpu.stat` when the cgroup is in one (hybrid nodes: the kernel keeps this base statistic in
        cgroup2 without any controller, to the µs, its split scaled to the exact total), else from
        `cpuacct.usage_user`/`usage_sys` (ns, the split sampled at ticks); throttling from the cpu controller's
        `cpu.stat`, read only when `throttling` (the kernel counts periods only under a quota).
        `in_v2_tree`: whether `rel` exists in the v2 tree (None: look). None when nothing could be read."""
        if not self.v1:
            return self.read(key, rel, "cpu", "cpu.stat", parse_cpu_stat)
        v1 = CpuStat()
        if throttling:
            read = self.read(key, rel, "cpu", "cpu.stat", parse_cpu_stat)
            if read is None:
                return None  # gone: its other files would fail the same way
            v1 = read
        if in_v2_tree is None:
            in_v2_tree = self.fs.cgroup_id(rel) is not None
        time: CpuStat | None
        if in_v2_tree:
            time = self.read(key, rel, "unified", "cpu.stat", parse_cpu_stat)
        else:
            user = self.read(key, rel, "cpuacct", "cpuacct.usage_user", parse_single_value, optional=True)
            system = (None if user is None else
                      self.read(key, rel, "cpuacct", "cpuacct.usage_sys", parse_single_value, optional=True))
            time = None if user is None or system is None else cpuacct_time(user, system)
        if time is None and not throttling:
            return None
        return cpu_stat_from_v1(v1, time or CpuStat())

    def cpu_quota(self, key: str, rel: str) -> CpuQuota | None:
        """The CFS bandwidth limit: v2 `cpu.max`; v1 `cpu.cfs_quota_us` and, only when there is a quota,
        `cpu.cfs_period_us`."""
        if not self.v1:
            return self.read(key, rel, "cpu", "cpu.max", parse_cpu_max)
        quota = self.read(key, rel, "cpu", "cpu.cfs_quota_us", parse_cfs_quota_us)
        if quota is None or quota.quota_us is None:
            return quota
        period = self.read(key, rel, "cpu", "cpu.cfs_period_us", parse_single_value)
        return None if period is None else CpuQuota(quota.quota_us, period.value)

    def pressure(self, key: str, rel: str, resource: str) -> Pressure | None:
        """`<resource>.pressure` (cpu, memory, io) of the v2 tree, on hybrid nodes too (PSI is cgroup2's);
        optional: absent without CONFIG_PSI, with `psi=0`, or for a cgroup outside the v2 tree."""
        return self.read(key, rel, "unified", f"{resource}.pressure", parse_pressure, optional=True)
