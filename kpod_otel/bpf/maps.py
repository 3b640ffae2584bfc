"""Readers of the programs' per-cgroup maps (bcc tables), one pass per map per cycle.

Per-CPU values are summed here. Maps are only read, never read-and-deleted: the kernel's values are
cumulative and are exported as-is.

A map is read with BPF_MAP_LOOKUP_BATCH (kernel >= 5.6) in chunks of `BATCH_ENTRIES` entries, and the
raw bytes are decoded as u64 words: a few syscalls per map instead of two per entry (bcc's `items()`
does get-next-key + lookup per key and builds ctypes objects for each), measured ~20x cheaper at 110
pods (bench/node_cycle.py, docs/performance.md). Every value struct of `ebpf/` is made of u64 fields;
a map whose layout is anything else, or a kernel without batch operations, is read with `items()`.
(bcc 0.26's own `items_lookup_batch` passes one ctypes object as both the batch token and the count,
so it is not used.)
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kpod_otel.bpf.histogram import RawHistogram

BATCH_ENTRIES = 256  # per BPF_MAP_LOOKUP_BATCH call; > the entries of any hash bucket


def _cells(value: Any) -> list[Any]:
    return list(value) if isinstance(value, ctypes.Array) else [value]


def _int(cell: Any) -> int:
    return int(cell.value) if hasattr(cell, "value") else int(cell)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where a value's u64 fields are, in words: one cell per CPU `stride` words apart."""

    cpus: int
    stride: int  # words per CPU cell (the kernel rounds per-CPU values up to 8 bytes)
    fields: dict[str, tuple[int, int]]  # name -> (word offset, words): words > 1 for u64 arrays
    scalar: bool  # the value is a bare u64, not a struct


def _layout(table: Any) -> _Layout | None:
    """The u64 layout of the table's value, or None when it is not (only) u64 words."""
    if ctypes.sizeof(table.Key) != 8:
        return None
    single = getattr(table, "sLeaf", None)  # bcc's per-CPU tables keep the one-CPU type here
    cpus = int(table.total_cpu) if single is not None else 1
    cell = single if single is not None else table.Leaf
    if cell in (ctypes.c_uint64, ctypes.c_ulonglong, ctypes.c_ulong) and ctypes.sizeof(cell) == 8:
        return _Layout(cpus, 1, {}, scalar=True)
    if not issubclass(cell, ctypes.Structure) or ctypes.sizeof(cell) % 8:
        return None
    fields: dict[str, tuple[int, int]] = {}
    for name, ctype in cell._fields_:
        offset = getattr(cell, name).offset
        base = ctype._type_ if issubclass(ctype, ctypes.Array) else ctype
        if ctypes.sizeof(base) != 8 or base not in (ctypes.c_uint64, ctypes.c_ulonglong, ctypes.c_ulong):
            return None
        if offset % 8:
            return None
        fields[name] = (offset // 8, ctypes.sizeof(ctype) // 8)
    return _Layout(cpus, ctypes.sizeof(cell) // 8, fields, scalar=False)


class _BatchUnsupported(Exception):
    pass


def _batches(table: Any, layout: _Layout) -> Iterator[tuple[memoryview, memoryview, int]]:
    """(keys as u64 words, values as u64 words, entries) per BPF_MAP_LOOKUP_BATCH call."""
    from bcc.libbcc import lib

    value_words = layout.stride * layout.cpus
    keys = ctypes.create_string_buffer(8 * BATCH_ENTRIES)
    values = ctypes.create_string_buffer(8 * value_words * BATCH_ENTRIES)
    key_words, value_cells = memoryview(keys).cast("B").cast("Q"), memoryview(values).cast("B").cast("Q")
    token_in, token_out, count = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
    first = True
    while True:
        count.value = BATCH_ENTRIES
        res = lib.bpf_lookup_batch(table.map_fd, None if first else ctypes.byref(token_in),
                                   ctypes.byref(token_out), keys, values, ctypes.byref(count))
        err = ctypes.get_errno() if res != 0 else 0
        if res != 0 and err != errno.ENOENT:
            if first and err in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise _BatchUnsupported(os.strerror(err))
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
        if count.value:
            yield key_words, value_cells, count.value
        if res != 0 or count.value == 0:  # ENOENT: that was the last batch
            return
        first = False
        token_in.value = token_out.value


def read_counters(table: Any, fields: tuple[str, ...]) -> dict[int, tuple[int, ...]]:
    """cgroup id -> the named struct fields (or, with no fields, the scalar value), summed over CPUs."""
    layout = _layout(table)
    if layout is not None and (layout.scalar == (not fields)) and all(
            f in layout.fields and layout.fields[f][1] == 1 for f in fields):
        try:
            return _read_counters_batch(table, layout, fields)
        except (_BatchUnsupported, OSError):  # an unexpected batch error: the per-key read still works
            pass
    return _read_counters_items(table, fields)


def _read_counters_batch(table: Any, layout: _Layout, fields: tuple[str, ...]) -> dict[int, tuple[int, ...]]:
    out: dict[int, tuple[int, ...]] = {}
    width = layout.stride * layout.cpus
    offsets = [layout.fields[f][0] for f in fields] if fields else [0]
    cpu_starts = range(0, width, layout.stride)
    for keys, values, n in _batches(table, layout):
        for i in range(n):
            base = i * width
            out[keys[i]] = tuple(sum(values[base + c + off] for c in cpu_starts) for off in offsets)
    return out


def _read_counters_items(table: Any, fields: tuple[str, ...]) -> dict[int, tuple[int, ...]]:
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
    layout = _layout(table)
    if layout is not None and layout.cpus == 1 and {"slots", "sum", "count"} <= set(layout.fields):
        try:
            return _read_histograms_batch(table, layout)
        except (_BatchUnsupported, OSError):
            pass
    out: dict[int, RawHistogram] = {}
    for key, value in table.items():
        out[_int(key)] = RawHistogram(tuple(int(s) for s in value.slots), int(value.sum), int(value.count))
    return out


def _read_histograms_batch(table: Any, layout: _Layout) -> dict[int, RawHistogram]:
    out: dict[int, RawHistogram] = {}
    width = layout.stride
    slots_at, slots_n = layout.fields["slots"]
    sum_at, count_at = layout.fields["sum"][0], layout.fields["count"][0]
    for keys, values, n in _batches(table, layout):
        for i in range(n):
            base = i * width
            out[keys[i]] = RawHistogram(tuple(values[base + slots_at:base + slots_at + slots_n]),
                                        values[base + sum_at], values[base + count_at])
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
