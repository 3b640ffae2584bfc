"""The batch map readers return exactly what bcc's per-key iteration reads, on real kernel maps."""

from __future__ import annotations

import ctypes
from typing import Any

from kpod_otel.bpf import maps
from kpod_otel.bpf.histogram import RawHistogram
from tests.conftest import require_bcc, require_root

PROGRAM = r"""
struct pair { u64 a; u64 b; };
struct hist { u64 slots[40]; u64 sum; u64 count; };
BPF_PERCPU_HASH(percpu_pairs, u64, struct pair, 4096);
BPF_HASH(pairs, u64, struct pair, 4096);
BPF_HASH(hists, u64, struct hist, 4096);
BPF_HASH(scalars, u64, u64, 4096);
BPF_PERCPU_HASH(percpu_scalars, u64, u64, 4096);
BPF_HASH(empty, u64, u64, 16);
"""


def _fill(table: Any, entries: int) -> None:
    single = getattr(table, "sLeaf", table.Leaf)
    for key in range(1, entries + 1):
        cpus = int(table.total_cpu) if hasattr(table, "sLeaf") else 1
        cells = []
        for cpu in range(cpus):
            if issubclass(single, ctypes.Structure):
                cell = single()
                for name, ctype in single._fields_:
                    if issubclass(ctype, ctypes.Array):
                        arr = getattr(cell, name)
                        for i in range(len(arr)):
                            arr[i] = key * 1000 + i + cpu
                    else:
                        setattr(cell, name, key * 7 + len(name) + (cpu << 40))
            else:
                cell = single(key * 13 + (cpu << 33))
            cells.append(cell)
        table[table.Key(key)] = table.Leaf(*cells) if hasattr(table, "sLeaf") else cells[0]


def _items_counters(table: Any, fields: tuple[str, ...]) -> dict[int, tuple[int, ...]]:
    out = {}
    for key, value in table.items():
        cells = list(value) if isinstance(value, ctypes.Array) else [value]
        if fields:
            out[key.value] = tuple(sum(int(getattr(c, f)) for c in cells) for f in fields)
        else:
            out[key.value] = (sum(int(c.value) if hasattr(c, "value") else int(c) for c in cells),)
    return out


def test_batch_reads_equal_per_key_reads() -> None:
    require_root()
    require_bcc()
    from bcc import BPF

    bpf = BPF(text=PROGRAM.encode())
    try:
        # more entries than one batch, so the batch token is followed across calls
        for name in ("percpu_pairs", "pairs", "hists", "scalars", "percpu_scalars"):
            _fill(bpf[name.encode()], maps.BATCH_ENTRIES * 2 + 17)
        for name, fields in (("percpu_pairs", ("a", "b")), ("pairs", ("b",)), ("scalars", ()),
                             ("percpu_scalars", ())):
            table = bpf[name.encode()]
            got = maps.read_counters(table, fields)
            assert len(got) == maps.BATCH_ENTRIES * 2 + 17
            assert got == _items_counters(table, fields), name
        hists = bpf[b"hists"]
        expected = {k.value: RawHistogram(tuple(int(s) for s in v.slots), int(v.sum), int(v.count))
                    for k, v in hists.items()}
        assert maps.read_histograms(hists) == expected
        assert maps.read_counters(bpf[b"empty"], ()) == {}
    finally:
        bpf.cleanup()
