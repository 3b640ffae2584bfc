"""Pure parsers of /proc and /sys files: text in, typed record out; malformed lines skipped and counted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field


def parse_uint(token: str) -> int | None:
    """An unsigned decimal as the kernel prints it (ASCII digits only), else None."""
    if not token or not token.isascii() or not token.isdigit():
        return None
    return int(token)


# --- /proc/<pid>/mountinfo ----------------------------------------------------------------------------

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape_mount_field(text: str) -> str:
    r"""The kernel escapes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`, `\134`."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True, slots=True)
class MountEntry:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str  # the path inside the filesystem that is mounted here ("/" for a whole filesystem)
    mount_point: str
    mount_options: str
    optional_fields: tuple[str, ...]  # shared:N, master:N, propagate_from:N, unbindable
    fs_type: str
    source: str
    super_options: str

    @property
    def device(self) -> str:
        return f"{self.major}:{self.minor}"

    def super_option(self, name: str) -> str | None:
        """The value of `name=value` in the superblock options (e.g. overlay's `upperdir`)."""
        for opt in self.super_options.split(","):
            key, sep, value = opt.partition("=")
            if key == name:
                return value if sep else ""
        return None


@dataclass(frozen=True, slots=True)
class MountInfo:
    mounts: tuple[MountEntry, ...] = ()
    malformed: int = 0

    def by_mount_point(self) -> dict[str, MountEntry]:
        """The mount visible at each mount point (the last one mounted over it wins)."""
        return {m.mount_point: m for m in self.mounts}


def _parse_mount_line(line: str) -> MountEntry | None:
    parts = line.split(" ")
    try:
        sep = parts.index("-", 6)
    except ValueError:
        return None
    if len(parts) < sep + 4 or sep < 6:
        return None
    mount_id, parent_id = parse_uint(parts[0]), parse_uint(parts[1])
    major_s, colon, minor_s = parts[2].partition(":")
    major, minor = parse_uint(major_s), parse_uint(minor_s)
    if mount_id is None or parent_id is None or major is None or minor is None or not colon:
        return None
    if not parts[3] or not parts[4] or not parts[sep + 1]:
        return None
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        major=major,
        minor=minor,
        root=unescape_mount_field(parts[3]),
        mount_point=unescape_mount_field(parts[4]),
        mount_options=parts[5],
        optional_fields=tuple(p for p in parts[6:sep] if p),
        fs_type=parts[sep + 1],
        source=unescape_mount_field(parts[sep + 2]),
        super_options=" ".join(parts[sep + 3:]),
    )


def parse_mountinfo(text: str) -> MountInfo:
    """/proc/<pid>/mountinfo (proc(5)): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`."""
    mounts: list[MountEntry] = []
    malformed = 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        entry = _parse_mount_line(line)
        if entry is None:
            malformed += 1
        else:
            mounts.append(entry)
    return MountInfo(tuple(mounts), malformed)


# --- /proc/<pid>/net/dev ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InterfaceCounters:
    """The eight counters of one interface, as /proc/net/dev and IFLA_STATS64 both provide them."""

    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_drops: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_drops: int = 0


@dataclass(frozen=True, slots=True)
class NetDev:
    interfaces: Mapping[str, InterfaceCounters] = field(default_factory=dict)
    malformed: int = 0


def parse_net_dev(text: str) -> NetDev:
    """/proc/<pid>/net/dev: two header lines, then `name: rx(8 fields) tx(8 fields)` per interface.

    Receive fields: bytes packets errs drop fifo frame compressed multicast; transmit fields: bytes
    packets errs drop fifo colls carrier compressed. The kernel's `drop` column on receive is
    rx_dropped + rx_missed_errors.
    """
    interfaces: dict[str, InterfaceCounters] = {}
    malformed = 0
    for line in text.splitlines():
        if not line.strip() or "|" in line:  # header lines
            continue
        name, colon, rest = line.partition(":")
        name = name.strip()
        fields = [parse_uint(t) for t in rest.split()]
        if not colon or not name or len(fields) < 16 or any(f is None for f in fields[:16]):
            malformed += 1
            continue
        f = [v for v in fields[:16] if v is not None]
        interfaces[name] = InterfaceCounters(
            rx_bytes=f[0], rx_packets=f[1], rx_errors=f[2], rx_drops=f[3],
            tx_bytes=f[8], tx_packets=f[9], tx_errors=f[10], tx_drops=f[11],
        )
    return NetDev(interfaces, malformed)


# --- /sys/dev/block/<maj:min>/uevent ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uevent:
    values: Mapping[str, str] = field(default_factory=dict)
    malformed: int = 0

    @property
    def devname(self) -> str | None:
        name = self.values.get("DEVNAME")
        return name or None


def parse_uevent(text: str) -> Uevent:
    """`KEY=value` per line: MAJOR, MINOR, DEVNAME, DEVTYPE, DISKSEQ, PARTN…"""
    values: dict[str, str] = {}
    malformed = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or key != key.strip() or not key.isascii():
            malformed += 1
            continue
        values[key] = value
    return Uevent(values, malformed)


def parse_boot_time(stat_text: str) -> int | None:
    """`btime` of /proc/stat (seconds since the epoch, the system's boot) -> ns; None when absent."""
    for line in stat_text.splitlines():
        if line.startswith("btime "):
            seconds = parse_uint(line[6:].strip())
            return None if seconds is None else seconds * 1_000_000_000
    return None
