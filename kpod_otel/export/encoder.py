"""Encodes one cycle's structured points (`kpod_otel.points`) straight into OTLP protobuf wire format:
the only place where metrics become bytes (for the exporter and `snapshot --format otlp-json`).

Why not through the SDK's MeterProviders (the obvious design: one per pod): measured on this machine
class at 110 pods x 55 points, the SDK path costs ~150 ms to collect plus ~70 ms to encode per cycle,
against ~20 ms to build the same protobuf directly (bench/export_cycle.py, docs/performance.md). The
target is <= 100 ms per cycle. Building the request ourselves also removes the SDK's per-metric
cardinality limit and its never-forgotten attribute sets from the picture: nothing here outlives a
cycle except the attribute cache below (the per-series state lives in `export/series.py`).

How: each ResourceMetrics is written in protobuf wire format here (the fields of
opentelemetry/proto/metrics/v1/metrics.proto, by number, see the tag constants), then the request is
parsed once by the protobuf runtime (upb, in C). Setting fields through the Python message API cost
~4 us per point (a message object per point, attribute messages copied into each point); writing
bytes costs well under 1 us (bench/node_cycle.py). Every point carries its own start time and flags
(NO_RECORDED_VALUE: a point without a value, ending its series); every sum and histogram carries its
temporality (CUMULATIVE, or DELTA under OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE). Attribute
sets are serialized by the protobuf runtime itself (KeyValue.SerializeToString) and cached, so only the
framing is hand-written; tests compare what a real receiver decodes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from kpod_otel.catalog import InstrumentKind, InstrumentSpec
from kpod_otel.model import AttrValue
from kpod_otel.points import AttrKey, HistogramDataPoint, HistogramPoints, NumberPoints, TargetPoints

CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA

# Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
_REQ_RESOURCE_METRICS = b"\x0a"  # ExportMetricsServiceRequest.resource_metrics = 1
_RM_RESOURCE = b"\x0a"  # ResourceMetrics.resource = 1
_RM_SCOPE_METRICS = b"\x12"  # ResourceMetrics.scope_metrics = 2
_RESOURCE_ATTRIBUTES = b"\x0a"  # Resource.attributes = 1
_SM_SCOPE = b"\x0a"  # ScopeMetrics.scope = 1
_SM_METRICS = b"\x12"  # ScopeMetrics.metrics = 2
_M_NAME, _M_DESCRIPTION, _M_UNIT = b"\x0a", b"\x12", b"\x1a"  # Metric.name = 1, description = 2, unit = 3
_M_GAUGE, _M_SUM, _M_HISTOGRAM = b"\x2a", b"\x3a", b"\x4a"  # Metric.gauge = 5, sum = 7, histogram = 9
_DATA_POINTS = b"\x0a"  # Gauge/Sum/Histogram.data_points = 1
_TEMPORALITY = b"\x10"  # Sum/Histogram.aggregation_temporality = 2 (varint)
_MONOTONIC_TRUE = b"\x18\x01"  # Sum.is_monotonic = 3 (varint) true
_NDP_ATTRIBUTES = b"\x3a"  # NumberDataPoint.attributes = 7
_NDP_START, _NDP_TIME = b"\x11", b"\x19"  # NumberDataPoint.start_time_unix_nano = 2, time_unix_nano = 3
_NDP_DOUBLE, _NDP_INT = b"\x21", b"\x31"  # NumberDataPoint.as_double = 4 (double), as_int = 6 (sfixed64)
_HDP_ATTRIBUTES = b"\x4a"  # HistogramDataPoint.attributes = 9
_HDP_START, _HDP_TIME = b"\x11", b"\x19"  # HistogramDataPoint.start_time_unix_nano = 2, time_unix_nano = 3
_HDP_COUNT, _HDP_SUM = b"\x21", b"\x29"  # HistogramDataPoint.count = 4 (fixed64), sum = 5 (double)
_HDP_BUCKETS, _HDP_BOUNDS = b"\x32", b"\x3a"  # bucket_counts = 6 (packed fixed64), explicit_bounds = 7
_NDP_FLAGS = b"\x40"  # NumberDataPoint.flags = 8 (varint)
_HDP_FLAGS = b"\x50"  # HistogramDataPoint.flags = 10 (varint)

_U64 = struct.Struct("<Q")
# A number point's fields after its attributes, in one pack: start (fixed64, sums only), time (fixed64) and
# the value (as_int sfixed64 or as_double), each behind its tag (_NDP_START 0x11, _NDP_TIME 0x19, _NDP_INT
# 0x31, _NDP_DOUBLE 0x21).
_SUM_INT = struct.Struct("<BQBQBq")
_SUM_DOUBLE = struct.Struct("<BQBQBd")
_GAUGE_INT = struct.Struct("<BQBq")
_GAUGE_DOUBLE = struct.Struct("<BQBd")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_SMALL_VARINTS_END = 1 << 12  # every length of a data point and of many metrics: one list index, not a loop
_TEMPORALITIES = {False: _TEMPORALITY + bytes([CUMULATIVE]), True: _TEMPORALITY + bytes([DELTA])}


def varint(n: int) -> bytes:
    if 0 <= n < _SMALL_VARINTS_END:
        return _SMALL_VARINTS[n]
    return _varint(n)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [_varint(n) for n in range(_SMALL_VARINTS_END)]


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + varint(len(payload)) + payload


def any_value(value: AttrValue) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


class AttributeCache:
    """Serialized attribute lists (each KeyValue framed as a repeated field with the given tag), shared
    by the many points of one container within a cycle and kept across cycles.

    Generational, so pod churn cannot grow it: `next_cycle()` keeps only the sets used during the cycle
    that just ended; a set unused for a whole cycle is forgotten.
    """

    def __init__(self) -> None:
        # tag -> attributes -> bytes (one table per tag: a point's lookup needs no (tag, attributes) key)
        self._cache: dict[bytes, dict[AttrKey, bytes]] = {}
        self._previous: dict[bytes, dict[AttrKey, bytes]] = {}

    def table(self, tag: bytes) -> dict[AttrKey, bytes]:
        """This cycle's sets already used with `tag`: look a set up here first, `get` it when missing."""
        table = self._cache.get(tag)
        if table is None:
            table = self._cache[tag] = {}
        return table

    def get(self, tag: bytes, attributes: AttrKey) -> bytes:
        table = self.table(tag)
        encoded = table.get(attributes)
        if encoded is None:
            previous = self._previous.get(tag)
            encoded = None if previous is None else previous.get(attributes)
            if encoded is None:
                encoded = b"".join(field(tag, KeyValue(key=k, value=any_value(v)).SerializeToString())
                                   for k, v in attributes)
            table[attributes] = encoded
        return encoded

    def next_cycle(self) -> None:
        self._previous, self._cache = self._cache, {}

    def __len__(self) -> int:
        return sum(len(t) for g in (self._cache, self._previous) for t in g.values())


@dataclass(frozen=True, slots=True)
class EncodedResource:
    """One target's ResourceMetrics, serialized and framed as ExportMetricsServiceRequest field 1: a
    request is the concatenation of any number of these."""

    data: bytes
    points: int
    size: int  # the ResourceMetrics' own size (what ResourceMetrics.ByteSize() returns)


def join_request(resources: Iterable[EncodedResource]) -> bytes:
    """The serialized ExportMetricsServiceRequest holding `resources`."""
    return b"".join(r.data for r in resources)


def _metric_head(spec: InstrumentSpec) -> bytes:
    head = b""
    if spec.name:
        head += field(_M_NAME, spec.name.encode())
    if spec.description:
        head += field(_M_DESCRIPTION, spec.description.encode())
    if spec.unit:
        head += field(_M_UNIT, spec.unit.encode())
    return head


def _packed_doubles(values: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


class ResourceEncoder:
    """Writes one target's points as a ResourceMetrics; one encoder per cycle (it caches metric heads
    and bounds for the cycle), the attribute cache is the caller's and outlives it."""

    def __init__(self, scope_name: str, scope_version: str, time_ns: int,
                 attributes: AttributeCache | None = None) -> None:
        """`time_ns`: the cycle's time (time_unix_nano of every point)."""
        self.time_ns = time_ns
        self._scope = field(_SM_SCOPE, InstrumentationScope(name=scope_name, version=scope_version)
                            .SerializeToString())
        self._attrs = attributes if attributes is not None else AttributeCache()
        self._heads: dict[str, bytes] = {}
        self._bounds: dict[tuple[float, ...], bytes] = {}
        # attribute set -> its point prefix (see _numbers), for points with and without a start time
        self._sum_prefixes: dict[AttrKey, bytes] = {}
        self._gauge_prefixes: dict[AttrKey, bytes] = {}

    def _head(self, spec: InstrumentSpec) -> bytes:
        head = self._heads.get(spec.name)
        if head is None:
            head = self._heads[spec.name] = _metric_head(spec)
        return head

    def encode(self, target: TargetPoints) -> EncodedResource | None:
        """The target's ResourceMetrics (None without points). Raises on a value the wire format cannot
        carry (an integer beyond 64 bits, a string that is not UTF-8): the caller drops that target."""
        metrics: list[bytes] = []
        points = 0
        for mp in target.metrics.values():
            n = len(mp)
            if not n:
                continue
            if isinstance(mp, HistogramPoints):
                metrics.append(self._histograms(mp.spec, mp.points, mp.delta))
            else:
                metrics.append(self._numbers(mp))
            points += n
        if not metrics:
            return None
        rm = (field(_RM_RESOURCE, self._attrs.get(_RESOURCE_ATTRIBUTES, tuple(target.resource.items())))
              + field(_RM_SCOPE_METRICS, self._scope + b"".join(metrics)))
        return EncodedResource(field(_REQ_RESOURCE_METRICS, rm), points, len(rm))

    def _numbers(self, mp: NumberPoints) -> bytes:
        spec = mp.spec
        gauge = spec.kind is InstrumentKind.GAUGE
        attrs = self._attrs.get
        # A point with a value is [prefix: tag, length, attributes][times and value: one struct.pack]; the
        # prefix depends only on the attribute set (the rest has a fixed size), so it is built once per set
        # and cycle, and shared by that container's points of every metric.
        prefixes = self._gauge_prefixes if gauge else self._sum_prefixes
        prefix_of = prefixes.get
        fixed = _GAUGE_INT.size if gauge else _SUM_INT.size  # (the double layouts have the same size)
        time_ns = self.time_ns
        now_time = _NDP_TIME + _U64.pack(time_ns)
        sum_int, sum_double = _SUM_INT.pack, _SUM_DOUBLE.pack
        gauge_int, gauge_double = _GAUGE_INT.pack, _GAUGE_DOUBLE.pack
        parts: list[bytes] = []
        for attributes, start, value, flags in zip(mp.attributes, mp.starts, mp.values, mp.flags, strict=True):
            if flags:  # an end of series: no value
                times = now_time if gauge else _NDP_START + _U64.pack(start) + now_time
                body = attrs(_NDP_ATTRIBUTES, attributes) + times + _NDP_FLAGS + varint(flags)
                parts.append(_DATA_POINTS + varint(len(body)) + body)
                continue
            prefix = prefix_of(attributes)
            if prefix is None:
                encoded = attrs(_NDP_ATTRIBUTES, attributes)
                prefix = prefixes[attributes] = _DATA_POINTS + varint(len(encoded) + fixed) + encoded
            if gauge:
                if value.__class__ is int:
                    rest = gauge_int(0x19, time_ns, 0x31, value)
                else:
                    rest = gauge_double(0x19, time_ns, 0x21, value)
            elif value.__class__ is int:
                rest = sum_int(0x11, start, 0x19, time_ns, 0x31, value)
            else:
                rest = sum_double(0x11, start, 0x19, time_ns, 0x21, value)
            parts += (prefix, rest)
        if gauge:
            data = field(_M_GAUGE, b"".join(parts))
        else:
            temporality = _TEMPORALITIES[mp.delta]
            if spec.kind is InstrumentKind.COUNTER:
                temporality += _MONOTONIC_TRUE
            data = field(_M_SUM, b"".join(parts) + temporality)
        return field(_SM_METRICS, self._head(spec) + data)

    def _histograms(self, spec: InstrumentSpec, points: Sequence[HistogramDataPoint], delta: bool) -> bytes:
        now_time = _HDP_TIME + _U64.pack(self.time_ns)
        parts: list[bytes] = []
        for h in points:
            head = self._attrs.get(_HDP_ATTRIBUTES, h.attributes) + _HDP_START + _U64.pack(h.start_ns) + now_time
            if h.flags:
                body = head + _HDP_COUNT + _U64.pack(0) + _HDP_FLAGS + varint(h.flags)
            else:
                bounds = self._bounds.get(h.bounds)
                if bounds is None:
                    bounds = self._bounds[h.bounds] = (field(_HDP_BOUNDS, _packed_doubles(h.bounds))
                                                       if h.bounds else b"")
                body = (head + _HDP_COUNT + _U64.pack(h.count) + _HDP_SUM + _F64.pack(h.sum)
                        + field(_HDP_BUCKETS, struct.pack(f"<{len(h.bucket_counts)}Q", *h.bucket_counts)) + bounds)
            parts.append(_DATA_POINTS + varint(len(body)) + body)
        data = field(_M_HISTOGRAM, b"".join(parts) + _TEMPORALITIES[delta])
        return field(_SM_METRICS, self._head(spec) + data)
