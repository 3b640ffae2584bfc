"""A checker of the OTel data-model rules every exported series must follow, fed request by request
(what a receiver got, in order). Reusable by any test that exports:

    checker = SeriesChecker()
    for item in receiver.received:
        checker.feed(item.request)
    assert not checker.violations, checker.violations[:10]

Rules (a series = Resource attributes + metric name + point attributes):
- start_time_unix_nano <= time_unix_nano (sums and histograms);
- a cumulative monotonic sum never decreases under one start time; a histogram's count and each of its
  buckets neither;
- a histogram point has count == sum(bucket_counts), len(bucket_counts) == len(explicit_bounds) + 1, and
  (values >= 0, as every duration is) a sum within what its buckets allow;
- a new start time is not earlier than the previous point of the series (no counts counted twice);
- a DELTA point starts no earlier than the previous point of its series ended (normally exactly then:
  contiguous), and a monotonic delta sum is never negative;
- a point flagged NO_RECORDED_VALUE carries no value and is the end of its series: a cumulative series
  only reappears as a new one (a start time no earlier than the flagged point); a gauge, which has no
  start time, may resume after a gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

NO_RECORDED_VALUE = 1
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA

Identity = tuple[frozenset[tuple[str, Any]], str, frozenset[tuple[str, Any]]]


def _attrs(kvs: Any) -> frozenset[tuple[str, Any]]:
    out = []
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out.append((kv.key, getattr(kv.value, kind) if kind else None))
    return frozenset(out)


@dataclass
class _Last:
    start: int
    time: int
    value: float | None  # sums
    counts: tuple[int, ...] = ()  # histograms: (count, *buckets)
    flagged: bool = False


@dataclass
class SeriesChecker:
    nonnegative_histograms: bool = True
    violations: list[str] = field(default_factory=list)
    points: int = 0
    flagged: int = 0
    _last: dict[Identity, _Last] = field(default_factory=dict)

    def feed(self, request: ExportMetricsServiceRequest) -> None:
        for rm in request.resource_metrics:
            resource = _attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    for dp in data.data_points:
                        self.points += 1
                        ident = (resource, m.name, _attrs(dp.attributes))
                        self._point(ident, kind, data, dp)

    def _bad(self, ident: Identity, what: str) -> None:
        res = dict(ident[0])
        who = res.get("k8s.pod.name") or res.get("k8s.pod.uid") or res.get("service.name")
        self.violations.append(f"{who} {ident[1]} {dict(ident[2])}: {what}")

    def _point(self, ident: Identity, kind: str, data: Any, dp: Any) -> None:
        flagged = bool(dp.flags & NO_RECORDED_VALUE)
        start, now = int(dp.start_time_unix_nano), int(dp.time_unix_nano)
        self.flagged += flagged
        if kind in ("sum", "histogram") and start > now:
            self._bad(ident, f"start {start} after time {now}")
        last = self._last.get(ident)
        if last is not None and now < last.time:
            self._bad(ident, "time went backwards")
        if last is not None and last.flagged and kind != "gauge" and start < last.time:
            self._bad(ident, "a point after the series' end marker, under the old start")
        value: float | None = None
        counts: tuple[int, ...] = ()
        if kind in ("sum", "gauge"):
            has = dp.WhichOneof("value")
            if flagged and has:
                self._bad(ident, "flagged point carries a value")
            if not flagged:
                value = dp.as_int if has == "as_int" else dp.as_double
        elif kind == "histogram":
            counts = (int(dp.count), *(int(c) for c in dp.bucket_counts))
            if flagged:
                if dp.count or len(dp.bucket_counts):
                    self._bad(ident, "flagged histogram carries counts")
            else:
                self._histogram(ident, dp)
        temporality = data.aggregation_temporality if kind in ("sum", "histogram") else None
        cumulative = temporality == CUMULATIVE
        if temporality == DELTA:
            if last is not None and start < last.time:
                self._bad(ident, f"delta point starts at {start}, before the previous point's time {last.time}")
            if kind == "sum" and data.is_monotonic and value is not None and value < 0:
                self._bad(ident, f"negative delta {value}")
        elif kind != "gauge" and temporality != CUMULATIVE:
            self._bad(ident, f"aggregation temporality {temporality}")
        if (cumulative and last is not None and not last.flagged and not flagged):
            if start == last.start:
                if kind == "sum" and data.is_monotonic and value is not None and last.value is not None \
                        and value < last.value:
                    self._bad(ident, f"decreased from {last.value} to {value} under one start time")
                if kind == "histogram" and len(counts) == len(last.counts) and any(
                        c < p for c, p in zip(counts, last.counts, strict=True)):
                    self._bad(ident, "histogram count or a bucket decreased under one start time")
            elif start < last.time:
                self._bad(ident, f"new start {start} before the previous point's time {last.time}")
        self._last[ident] = _Last(start, now, value, counts, flagged)

    def _histogram(self, ident: Identity, dp: Any) -> None:
        buckets = list(dp.bucket_counts)
        bounds = list(dp.explicit_bounds)
        if dp.count != sum(buckets):
            self._bad(ident, f"count {dp.count} != sum of buckets {sum(buckets)}")
        if buckets and len(buckets) != len(bounds) + 1:
            self._bad(ident, f"{len(buckets)} buckets for {len(bounds)} bounds")
            return
        if not self.nonnegative_histograms or not buckets:
            return
        low = sum(n * (bounds[i - 1] if i >= 1 else 0.0) for i, n in enumerate(buckets))
        high = math.inf if buckets[-1] else sum(n * bounds[i] for i, n in enumerate(buckets[:-1]))
        tolerance = 1e-9 * max(1.0, abs(dp.sum))
        if not (low - tolerance <= dp.sum <= high + tolerance):
            self._bad(ident, f"sum {dp.sum} outside what the buckets allow [{low}, {high}]")
