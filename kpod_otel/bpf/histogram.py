"""Kernel log2 histograms -> OTel explicit-bucket histograms, exactly.

The programs in `ebpf/` bucket nanosecond values with bcc's `bpf_log2l()`: slot k >= 2 holds the integers
[2^(k-1), 2^k - 1], slot 1 holds 0 and 1, slot 0 is never used, and the last slot (SLOTS - 1) also holds
every larger value (the program clamps). OTel explicit bounds are inclusive upper bounds, so slot k maps
to the bucket with upper bound (2^k - 1) ns, and the last slot is the overflow bucket (+Inf). Because
values are whole nanoseconds, a value v lands in slot k exactly when (2^(k-1) - 1) < v <= 2^k - 1, i.e.
in the OTel bucket whose bounds contain v.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

from kpod_otel.collector import HistogramPoint
from kpod_otel.model import Attributes

SLOTS = 40  # KPOD_HIST_SLOTS in ebpf/kpod.h
NS_PER_S = 1_000_000_000


def slot_of(value_ns: int) -> int:
    """The slot the kernel puts `value_ns` in (bpf_log2l, clamped), mirrored for documentation and tests."""
    return min(max(value_ns, 1).bit_length(), SLOTS - 1)


def slot_upper_ns(slot: int) -> int:
    """Largest value (inclusive) in `slot`; slots 0 and 1 both end at 1 ns."""
    return (1 << max(slot, 1)) - 1


def _slot_low_ns(slot: int) -> int:
    """Smallest value in `slot` (slot 1 also holds 0)."""
    return 1 << (slot - 1) if slot >= 2 else 0


_SLOT_LOW_NS = tuple(_slot_low_ns(k) for k in range(SLOTS))
_SLOT_HIGH_NS = tuple(slot_upper_ns(k) for k in range(SLOTS))

# Upper bounds of slots 1 .. SLOTS-2 in seconds; slot SLOTS-1 is the +Inf bucket.
BOUNDS_SECONDS: tuple[float, ...] = tuple(slot_upper_ns(k) / NS_PER_S for k in range(1, SLOTS - 1))


@dataclass(frozen=True, slots=True)
class RawHistogram:
    """One kernel histogram value: slot counts, and the exact sum (ns) and count of the samples."""

    slots: tuple[int, ...]
    sum_ns: int
    count: int

    def __add__(self, other: RawHistogram) -> RawHistogram:
        return RawHistogram(
            tuple(a + b for a, b in zip(self.slots, other.slots, strict=True)),
            self.sum_ns + other.sum_ns,
            self.count + other.count,
        )


def bucket_counts(slots: Sequence[int]) -> tuple[int, ...]:
    """Slot counts -> OTel bucket counts for BOUNDS_SECONDS (len(BOUNDS_SECONDS) + 1 entries)."""
    if len(slots) != SLOTS:
        raise ValueError(f"expected {SLOTS} slots, got {len(slots)}")
    counts = list(slots[1:])
    counts[0] += slots[0]  # never filled by bpf_log2l; kept so that no sample is ever dropped
    return tuple(counts)


def consistent_sum_ns(slots: Sequence[int], sum_ns: int) -> int:
    """`sum_ns` clamped to what the slot counts allow (each sample of slot k lies in [2^(k-1), 2^k - 1] ns).

    The kernel adds to a slot, to the sum and to the count with separate atomic operations, so a read
    can fall between them; the slots are the truth the point's count is taken from, and the sum is
    kept within their range. Over successive reads the clamped sum never decreases: both the raw sum
    and the slot-implied bounds only grow.
    """
    low: int
    high: int
    if len(slots) == SLOTS:  # thousands per cycle: the products in C
        low = sum(map(operator.mul, slots, _SLOT_LOW_NS))
        high = sum(map(operator.mul, slots, _SLOT_HIGH_NS))
    else:
        low = high = 0
        for k, n in enumerate(slots):
            if n:
                low += n * _slot_low_ns(k)
                high += n * slot_upper_ns(k)
    if sum_ns < low:
        return low
    if sum_ns > high and not slots[-1]:  # the last slot has no upper bound
        return high
    return sum_ns


def to_point(name: str, attributes: Attributes, raw: RawHistogram) -> HistogramPoint:
    """count == sum(bucket_counts) and a sum consistent with them, however the read interleaved with
    the kernel's updates (the separately counted `raw.count` is not used)."""
    counts = bucket_counts(raw.slots)
    return HistogramPoint(
        name=name,
        attributes=attributes,
        bounds=BOUNDS_SECONDS,
        bucket_counts=counts,
        sum=consistent_sum_ns(raw.slots, raw.sum_ns) / NS_PER_S,
        count=sum(counts),
    )
