"""Readers of the programs' per-cgroup maps (bcc tables), one pass per map per cycle.

Per-CPU values are summed here. Maps are only read, never read-and-deleted: the kernel's values are
cumulative and are exported as-is.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

from kpod_otel.bpf.histogram import RawHistogram


def _cells(value: Any) -> list[Any]:
    return list(value) if isinstance(value, ctypes.Array) else [value]


def _int(cell: Any) -> int:
    return int(cell.value) if hasattr(cell, "value") else int(cell)


def read_counters(table: Any, fields: tuple[str, ...]) -> dict[int, tuple[int, ...]]:
    """cgroup id -> the named struct fields (or, with no fields, the scalar value), summed over CPUs."""
    out: dict[int, tuple[int, ...]] = {}
    for key, value in table.items():
        cells = _cells(value)
        if fields:
            out[_int(key)] = tuple(sum(int(getattr(c, f)) for c in cells) for f in fields)
        else:
            out[_int(key)] = (sum(_int(c) for c in cells),)
    return out


def read_histograms(table: Any) -> dict[int, RawHistogram]:
    """cgroup id -> slots, sum and count of a `struct kpod_hist` map."""
    out: dict[int, RawHistogram] = {}
    for key, value in table.items():
        out[_int(key)] = RawHistogram(tuple(int(s) for s in value.slots), int(value.sum), int(value.count))
    return out


def delete_keys(table: Any, cgroup_ids: Iterable[int]) -> int:
    """Delete entries of removed cgroups; returns how many were deleted."""
    deleted = 0
    for cgroup_id in cgroup_ids:
        try:
            del table[table.Key(cgroup_id)]
            deleted += 1
        except KeyError:
            pass
    return deleted
