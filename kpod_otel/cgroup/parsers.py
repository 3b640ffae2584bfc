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
        if len(parts) == 2 and parts[1].isdigit() and parts[1].isascii():  # _uint, inlined: ~40 lines a file
            values[parts[0]] = int(parts[1])
        elif parts:
            malformed += 1
    return FlatKeyed(values, malformed)


# --- memory -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryStat:
    """memory.stat (v1 or v2)."""

    values: Mapping[str, int] = field(default_factory=dict)
    malformed: int = 0

    def _hierarchical(self, v2_key: str, v1_key: str) -> int | None:
        """v2 keys count the cgroup and its descendants; v1 prints the cgroup's own value as `<v1_key>` and
        the one including its descendants as `total_<v1_key>`, which is the one that matches v2 (and
        `memory.usage_in_bytes`)."""
        if "total_" + v1_key in self.values:
            return self.values["total_" + v1_key]
        return self.values.get(v2_key)

    @property
    def major_faults(self) -> int | None:
        """Major page faults of the cgroup and its descendants (`pgmajfault` / v1 `total_pgmajfault`)."""
        return self._hierarchical("pgmajfault", "pgmajfault")

    @property
    def anon(self) -> int | None:
        """Anonymous memory: v2 `anon`, v1 `total_rss` (anon + swap cache; neither counts shmem)."""
        return self._hierarchical("anon", "rss")

    @property
    def file(self) -> int | None:
        """Page cache: v2 `file`, v1 `total_cache` (both include shmem/tmpfs pages)."""
        return self._hierarchical("file", "cache")

    @property
    def inactive_file(self) -> int | None:
        return self._hierarchical("inactive_file", "inactive_file")


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
    """A file holding one unsigned number (v1 `cpuacct.usage_*`, `memory.usage_in_bytes`, `cpu.cfs_period_us`;
    v2 `memory.current`)."""

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
    def user_usec(self) -> int | None:
        return self.values.get("user_usec")

    @property
    def system_usec(self) -> int | None:
        return self.values.get("system_usec")

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
    """v2 cpu.stat (or the v1 cpu controller's, which `cpu_stat_from_v1` translates)."""
    flat = parse_flat_keyed(text)
    return CpuStat(flat.values, flat.malformed)


def cpuacct_time(user: SingleValue, system: SingleValue) -> CpuStat:
    """v1 `cpuacct.usage_user` and `cpuacct.usage_sys` (ns, the split sampled at scheduler ticks) as v2's
    `user_usec`/`system_usec`, and their sum as `usage_usec`."""
    values: dict[str, int] = {}
    if user.value is not None and system.value is not None:
        values = {"user_usec": user.value // 1000, "system_usec": system.value // 1000,
                  "usage_usec": (user.value + system.value) // 1000}
    return CpuStat(values, user.malformed + system.malformed)


def cpu_stat_from_v1(cpu_stat: CpuStat, time: CpuStat) -> CpuStat:
    """v1 in v2 terms: the cpu controller's `cpu.stat` (`nr_periods`, `nr_throttled`, `throttled_time` in ns)
    with the CPU time of `time` (`cpuacct_time`, or on hybrid nodes the v2 tree's own `cpu.stat`)."""
    v1 = cpu_stat.values
    values: dict[str, int] = {k: v1[k] for k in ("nr_periods", "nr_throttled") if k in v1}
    if "throttled_time" in v1:
        values["throttled_usec"] = v1["throttled_time"] // 1000
    values.update((k, v) for k, v in time.values.items() if k in ("usage_usec", "user_usec", "system_usec"))
    return CpuStat(values, cpu_stat.malformed + time.malformed)


@dataclass(frozen=True, slots=True)
class CpuQuota:
    """A CFS bandwidth limit: `quota_us` of CPU time per `period_us`; `quota_us` None: unlimited."""

    quota_us: int | None = None
    period_us: int | None = None
    malformed: int = 0

    @property
    def cpus(self) -> float | None:
        """The limit in CPUs (quota / period), None when unlimited or unknown."""
        if self.quota_us is None or not self.period_us:
            return None
        return self.quota_us / self.period_us


def parse_cpu_max(text: str) -> CpuQuota:
    """v2 cpu.max: `<quota> <period>` or `max <period>` (microseconds). (Single-value parsers count an empty
    or odd file as one malformed line: the kernel never prints one, so it must not pass for "unlimited".)"""
    parts = text.split()
    period = _uint(parts[1]) if len(parts) == 2 else None
    if period is None or (parts[0] != "max" and _uint(parts[0]) is None):
        return CpuQuota(malformed=1)
    return CpuQuota(None if parts[0] == "max" else _uint(parts[0]), period)


def parse_cfs_quota_us(text: str) -> CpuQuota:
    """v1 cpu.cfs_quota_us: microseconds per period, `-1` for unlimited (the period is another file,
    cpu.cfs_period_us, needed only when there is a quota)."""
    token = text.strip()
    if token == "-1":
        return CpuQuota()
    quota = _uint(token)
    return CpuQuota(quota) if quota is not None else CpuQuota(malformed=1)


# --- memory limits ------------------------------------------------------------------------------------

# v1 prints "no limit" as PAGE_COUNTER_MAX pages in bytes: LONG_MAX rounded down to the page size
# (9223372036854771712 with 4 KiB pages, 9223372036854710272 with 64 KiB pages). Anything within a
# MiB of LONG_MAX is that; no real limit comes near 8 EiB.
V1_MEMORY_UNLIMITED_MIN = 2**63 - 2**20


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    """memory.max (v2) or memory.limit_in_bytes (v1); `bytes` None: unlimited (or unparseable)."""

    bytes: int | None = None
    malformed: int = 0


def parse_memory_max(text: str) -> MemoryLimit:
    """v2 memory.max: bytes, or `max`."""
    token = text.strip()
    if token == "max":
        return MemoryLimit()
    value = _uint(token)
    return MemoryLimit(value) if value is not None else MemoryLimit(malformed=1)


def parse_memory_limit_in_bytes(text: str) -> MemoryLimit:
    """v1 memory.limit_in_bytes: bytes; "unlimited" is the huge page-rounded LONG_MAX."""
    value = _uint(text.strip())
    if value is None:
        return MemoryLimit(malformed=1)
    return MemoryLimit(None if value >= V1_MEMORY_UNLIMITED_MIN else value)


# --- pressure stall information -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pressure:
    """{cpu,memory,io}.pressure: the cumulative stall time `total=` (microseconds) of the `some` line
    (at least one task stalled) and of the `full` line (all non-idle tasks stalled at once); `full` is
    None where the kernel prints no such line (cpu before Linux 5.13)."""

    some_usec: int | None = None
    full_usec: int | None = None
    malformed: int = 0


def parse_pressure(text: str) -> Pressure:
    """`some avg10=0.12 avg60=0.05 avg300=0.01 total=1234567` and the same for `full`. Only `total=` is used
    (the averages are the kernel's own smoothing of it): a line is malformed when it is not `some`/`full` or
    has no unsigned `total=`."""
    totals: dict[str, int] = {}
    malformed = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        total = _uint(parts[-1][6:]) if parts[-1].startswith("total=") else None
        if total is None or parts[0] not in ("some", "full"):
            malformed += 1
            continue
        totals[parts[0]] = total
    return Pressure(totals.get("some"), totals.get("full"), malformed)


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
