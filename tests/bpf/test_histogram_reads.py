"""Histogram points stay self-consistent however a read of the map value interleaves with the kernel's
updates (a property test; no kernel needed).

The programs add one sample with three separate atomic operations (its slot, the sum, the count), on
any number of CPUs at once, and the agent's read copies the value's words one by one while they run.
Whatever the interleaving, every point must have count == sum(bucket_counts) and a sum within what its
buckets allow, and successive points must never decrease (count, each bucket, sum): hypothesis draws
the samples, the order of each sample's three operations, and where the reads' word copies fall.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kpod_otel.bpf.histogram import BOUNDS_SECONDS, NS_PER_S, SLOTS, RawHistogram, slot_of, to_point

WORDS = SLOTS + 2  # slots..., sum, count (struct kpod_hist)
SUM, COUNT = SLOTS, SLOTS + 1

samples = st.lists(st.tuples(st.integers(0, 2**40), st.permutations([0, 1, 2])), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(samples=samples, schedule=st.lists(st.integers(0, 100), min_size=1, max_size=400))
def test_every_read_is_a_consistent_histogram(samples: list[tuple[int, list[int]]], schedule: list[int]) -> None:
    kernel = [0] * WORDS
    # each sample's pending operations: word index and amount, in the order hypothesis chose
    pending = []
    for value, order in samples:
        ops = [(slot_of(value), 1), (SUM, value), (COUNT, 1)]
        pending.append([ops[i] for i in order])
    copy: list[int] = []  # the read in progress: words copied so far
    points = []
    for step in schedule:
        busy = [ops for ops in pending if ops]
        if busy and step % 3:  # a CPU makes one atomic update
            word, amount = busy[step % len(busy)].pop(0)
            kernel[word] += amount
        else:  # the reader copies the next word of the value
            copy.append(kernel[len(copy)])
            if len(copy) == WORDS:
                raw = RawHistogram(tuple(copy[:SLOTS]), copy[SUM], copy[COUNT])
                points.append(to_point("h", {}, raw))
                copy = []
    for ops in pending:  # the writers finish; one last, quiet read
        for word, amount in ops:
            kernel[word] += amount
    points.append(to_point("h", {}, RawHistogram(tuple(kernel[:SLOTS]), kernel[SUM], kernel[COUNT])))

    bounds = (0.0, *BOUNDS_SECONDS)
    for p in points:
        assert p.count == sum(p.bucket_counts)
        low = sum(n * bounds[i] for i, n in enumerate(p.bucket_counts[:-1])) + p.bucket_counts[-1] * bounds[-1]
        high = sum(n * BOUNDS_SECONDS[i] for i, n in enumerate(p.bucket_counts[:-1]))
        assert low - 1e-9 <= p.sum
        if not p.bucket_counts[-1]:
            assert p.sum <= high + 1e-9
    for before, after in itertools.pairwise(points):
        assert after.count >= before.count
        assert all(a >= b for a, b in zip(after.bucket_counts, before.bucket_counts, strict=True))
        assert after.sum >= before.sum
    # the quiet read is exact: every sample counted once, the sum to the nanosecond
    assert points[-1].count == len(samples)
    assert points[-1].sum == sum(v for v, _ in samples) / NS_PER_S
