"""Pure parsers of cgroup files (v1 and v2): text in, typed record out.

Every parser accepts any text and never raises: a line that does not have the kernel's shape is skipped
and counted in the record's `malformed` field, so the caller can log it and count it in its self-metrics.
Values are the kernel's unsigned counters; a negative or non-numeric value makes its line malformed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kpod_otel.procfs.parsers import parse_uint as _uint


def _is_decimal(token: str) -> bool:
    whole, dot, frac = token.partition(".")
    return bool(dot) and _uint(whole) is not None and _uint(frac) is not None


def _is_majmin(token: str) -> bool:
    major, sep, minor = token.partition(":")
    return bool(sep) and _uint(major) is not None and _uint(minor) is not None


@dataclass(frozen=True, slots=True)
class FlatKeyed:
    """A "flat keyed" cgroup file: one `<key> <value>` per line."""

    values: Mapping[str, int] = field(default_factory=dict)
    malformed: int = 0


def parse_flat_keyed(text: str) -> FlatKeyed:
    """Parse `<key> <uint>` lines (memory.stat, memory.events, cpu.stat, memory.oom_control)."""
    values: dict[str, int] = {}
    malformed = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        value = _uint(parts[1]) if len(parts) == 2 else None
        if value is None:
            malformed += 1
            continue
        values[parts[0]] = value
    return FlatKeyed(values, malformed)


# --- memory -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryStat:
    """memory.stat (v1 or v2)."""

    values: Mapping[str, int] = field(default_factory=dict)
    malformed: int = 0

    @property
    def major_faults(self) -> int | None:
        """Major page faults of the cgroup and its descendants.

        v2's `pgmajfault` is hierarchical; v1 prints the cgroup's own count as `pgmajfault` and the
        hierarchical one as `total_pgmajfault`, which is the one that matches v2.
        """
        if "total_pgmajfault" in self.values:
            return self.values["total_pgmajfault"]
        return self.values.get("pgmajfault")


def parse_memory_stat(text: str) -> MemoryStat:
    """memory.stat, v1 (`cache`, `rss`, …, `total_*`) or v2 (`anon`, `file`, …, `pgmajfault`)."""
    flat = parse_flat_keyed(text)
    return MemoryStat(flat.values, flat.malformed)


@dataclass(frozen=True, slots=True)
class MemoryEvents:
    """Memory events of a cgroup: v2 memory.events (hierarchical), or v1 memory.oom_control, whose
    `oom_kill` line (kernel 4.13+) has the same meaning."""

    values: Mapping[str, int] = field(default_factory=dict)
    malformed: int = 0

    @property
    def oom_kill(self) -> int | None:
        return self.values.get("oom_kill")


def parse_memory_events(text: str) -> MemoryEvents:
    """v2 memory.events (`low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill`) or v1 memory.oom_control
    (`oom_kill_disable`, `under_oom`, `oom_kill`): both are flat keyed."""
    flat = parse_flat_keyed(text)
    return MemoryEvents(flat.values, flat.malformed)


@dataclass(frozen=True, slots=True)
class SingleValue:
    """A file holding one unsigned number (v1 `cpuacct.usage`, `memory.usage_in_bytes`; v2 `memory.current`)."""

    value: int | None = None
    malformed: int = 0


def parse_single_value(text: str) -> SingleValue:
    token = text.strip()
    value = _uint(token)
    return SingleValue(value, 0 if value is not None else 1)


# --- cpu ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuStat:
    """CPU time and throttling of a cgroup and its descendants in v2 `cpu.stat` terms (`usage_usec`,
    `user_usec`, `system_usec`, and with the cpu controller `nr_periods`, `nr_throttled`, `throttled_usec`),
    whatever the cgroup version (see `cpu_stat_from_v1`)."""

    values: Mapping[str, int] = field(default_factory=dict)
    malformed: int = 0

    @property
    def usage_usec(self) -> int | None:
        return self.values.get("usage_usec")

    @property
    def nr_periods(self) -> int | None:
        return self.values.get("nr_periods")

    @property
    def nr_throttled(self) -> int | None:
        return self.values.get("nr_throttled")

    @property
    def throttled_usec(self) -> int | None:
        return self.values.get("throttled_usec")


def parse_cpu_stat(text: str) -> CpuStat:
    """v2 cpu.stat."""
    flat = parse_flat_keyed(text)
    return CpuStat(flat.values, flat.malformed)


def cpu_stat_from_v1(cpu_stat: CpuStat, cpuacct_usage: SingleValue) -> CpuStat:
    """v1's two files in v2 terms: the cpu controller's `cpu.stat` (`nr_periods`, `nr_throttled`,
    `throttled_time` in ns) and `cpuacct.usage` (ns). v1 has no per-cgroup user/system split in
    microseconds (`cpuacct.stat` counts clock ticks), so `user_usec`/`system_usec` stay absent."""
    v1 = cpu_stat.values
    values: dict[str, int] = {k: v1[k] for k in ("nr_periods", "nr_throttled") if k in v1}
    if "throttled_time" in v1:
        values["throttled_usec"] = v1["throttled_time"] // 1000
    if cpuacct_usage.value is not None:
        values["usage_usec"] = cpuacct_usage.value // 1000
    return CpuStat(values, cpu_stat.malformed + cpuacct_usage.malformed)


# --- io / blkio ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceIO:
    """Cumulative I/O of one cgroup on one block device."""

    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0


@dataclass(frozen=True, slots=True)
class IoStat:
    """v2 io.stat: per `maj:min`, every `key=value` the kernel printed (rbytes, wbytes, rios, wios,
    dbytes, dios, and cost/latency keys when io.cost or io.latency are active)."""

    devices: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    malformed: int = 0

    def device_io(self) -> dict[str, DeviceIO]:
        return {
            dev: DeviceIO(kv.get("rbytes", 0), kv.get("wbytes", 0), kv.get("rios", 0), kv.get("wios", 0))
            for dev, kv in self.devices.items()
        }


def parse_io_stat(text: str) -> IoStat:
    """`8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0` per line."""
    devices: dict[str, dict[str, int]] = {}
    malformed = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if not _is_majmin(parts[0]):
            malformed += 1
            continue
        pairs: dict[str, int] = {}
        ok = True
        for token in parts[1:]:
            key, sep, raw = token.partition("=")
            value = _uint(raw)
            if value is None and sep and key and _is_decimal(raw):
                continue  # io.cost's `cost.vrate=100.00`: a ratio, not a counter
            if not sep or not key or value is None:
                ok = False
                break
            pairs[key] = value
        if not ok:
            malformed += 1
            continue
        devices.setdefault(parts[0], {}).update(pairs)
    return IoStat(devices, malformed)


@dataclass(frozen=True, slots=True)
class BlkioStat:
    """A v1 blkio "recursive"-style stat file: per `maj:min`, per operation (Read, Write, Sync, Async,
    Discard, Total), plus the file's grand `Total` line."""

    devices: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    total: int | None = None
    malformed: int = 0

    def reads_writes(self) -> dict[str, tuple[int, int]]:
        """maj:min -> (Read, Write)."""
        return {dev: (ops.get("Read", 0), ops.get("Write", 0)) for dev, ops in self.devices.items()}


def parse_blkio_stat(text: str) -> BlkioStat:
    """v1 `blkio.throttle.io_service_bytes(_recursive)`, `blkio.throttle.io_serviced(_recursive)` and the
    `blkio.bfq.*` files of the same shape: `254:0 Read 4096` lines and a final `Total 4096`."""
    devices: dict[str, dict[str, int]] = {}
    total: int | None = None
    malformed = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 2 and parts[0] == "Total":
            value = _uint(parts[1])
            if value is None:
                malformed += 1
            else:
                total = value
            continue
        value = _uint(parts[2]) if len(parts) == 3 else None
        if value is None or not _is_majmin(parts[0]) or not parts[1].isalpha():
            malformed += 1
            continue
        devices.setdefault(parts[0], {})[parts[1]] = value
    return BlkioStat(devices, total, malformed)


def device_io_from_blkio(service_bytes: BlkioStat, serviced: BlkioStat) -> dict[str, DeviceIO]:
    """v1's pair of files (bytes, operations) as per-device I/O in v2 terms."""
    data_bytes, ops = service_bytes.reads_writes(), serviced.reads_writes()
    result: dict[str, DeviceIO] = {}
    for dev in sorted(set(data_bytes) | set(ops)):
        rb, wb = data_bytes.get(dev, (0, 0))
        r, w = ops.get(dev, (0, 0))
        result[dev] = DeviceIO(read_bytes=rb, write_bytes=wb, reads=r, writes=w)
    return result


def parse_cgroup_procs(text: str) -> tuple[tuple[int, ...], int]:
    """cgroup.procs: one pid per line -> (pids, malformed lines)."""
    pids: list[int] = []
    malformed = 0
    for line in text.splitlines():
        token = line.strip()
        if not token:
            continue
        pid = _uint(token)
        if pid is None or pid == 0:
            malformed += 1
            continue
        pids.append(pid)
    return tuple(pids), malformed
