"""Tracepoint formats from tracefs: the running kernel's truth about which tracepoints and fields exist.

Formats change between kernels (fields were added to tcp_retransmit_skb and mark_victim), so the loader
checks every field a program reads before compiling it, instead of guessing from kernel versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]+);")


@dataclass(frozen=True, slots=True)
class TracepointNeed:
    """A tracepoint a program attaches to, and the fields it reads."""

    category: str
    event: str
    fields: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.category}:{self.event}"


def parse_format_fields(text: str) -> dict[str, str]:
    """Field name -> C declaration from a tracefs `format` file (common_* fields included)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = _FIELD.match(line)
        if not m:
            continue
        decl = m.group("decl").strip()
        name = decl.split()[-1].split("[", 1)[0]
        fields[name] = decl
    return fields


def find_tracefs(candidates: tuple[str, ...] = TRACEFS_ROOTS) -> Path | None:
    for root in candidates:
        try:
            if Path(root, "events").is_dir():
                return Path(root)
        except PermissionError:  # tracefs is mode 0700: an unprivileged process cannot even stat it
            continue
    return None


def check_tracepoint(tracefs: Path, need: TracepointNeed) -> str:
    """"" if the tracepoint exists with all needed fields, else the reason it cannot be used."""
    fmt = tracefs / "events" / need.category / need.event / "format"
    try:
        text = fmt.read_text()
    except FileNotFoundError:
        return f"tracepoint {need.name} does not exist in this kernel"
    except OSError as exc:
        return f"tracepoint {need.name}: cannot read {fmt}: {exc.strerror}"
    fields = parse_format_fields(text)
    missing = [f for f in need.fields if f not in fields]
    if missing:
        return f"tracepoint {need.name} lacks field(s) {', '.join(missing)}"
    return ""


# Every program drops the entries of a removed v2 cgroup here.
CGROUP_RMDIR = TracepointNeed("cgroup", "cgroup_rmdir", ("root", "id"))
