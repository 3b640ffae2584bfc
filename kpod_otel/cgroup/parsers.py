"""Pure parsers of cgroup files (v1 and v2): text in, typed record out.

Every parser accepts any text and never raises: a line that does not have the kernel's shape is skipped
and counted in the record's `malformed` field, so the caller can log it and count it in its self-metrics.
Values are the kernel's unsigned counters; a negative or non-numeric value makes its line malformed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def _uint(token: str) -> int | None:
    """An unsigned decimal as the kernel prints it (ASCII digits only), else None."""
    if not token or not token.isascii() or not token.isdigit():
        return None
    return int(token)


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
    """v2 memory.events (hierarchical) or memory.events.local."""

    values: Mapping[str, int] = field(default_factory=dict)
    malformed: int = 0

    @property
    def oom_kill(self) -> int | None:
        return self.values.get("oom_kill")


def parse_memory_events(text: str) -> MemoryEvents:
    """v2 memory.events: `low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill`."""
    flat = parse_flat_keyed(text)
    return MemoryEvents(flat.values, flat.malformed)


@dataclass(frozen=True, slots=True)
class OomControl:
    """v1 memory.oom_control."""

    oom_kill_disable: bool | None = None
    under_oom: bool | None = None
    oom_kill: int | None = None  # absent before kernel 4.13
    malformed: int = 0


def parse_memory_oom_control(text: str) -> OomControl:
    """v1 memory.oom_control: `oom_kill_disable 0`, `under_oom 0`, `oom_kill <n>`."""
    flat = parse_flat_keyed(text)
    v = flat.values
    return OomControl(
        oom_kill_disable=bool(v["oom_kill_disable"]) if "oom_kill_disable" in v else None,
        under_oom=bool(v["under_oom"]) if "under_oom" in v else None,
        oom_kill=v.get("oom_kill"),
        malformed=flat.malformed,
    )


# --- cpu ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuStat:
    """v2 cpu.stat (`usage_usec`, `user_usec`, `system_usec`, and with the cpu controller
    `nr_periods`, `nr_throttled`, `throttled_usec`, …)."""

    values: Mapping[str, int] = field(default_factory=dict)
    malformed: int = 0

    @property
    def usage_usec(self) -> int | None:
        return self.values.get("usage_usec")


def parse_cpu_stat(text: str) -> CpuStat:
    flat = parse_flat_keyed(text)
    return CpuStat(flat.values, flat.malformed)


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
