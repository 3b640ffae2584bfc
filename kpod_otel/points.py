"""A cycle's result as structured points: per target (a pod, a local workload, the agent itself), per
metric, one point per series with its own start time and flags.

This is what the console, `snapshot` and the tests read; the OTLP encoder (`export/encoder.py`) is the
only thing that turns it into bytes, for the exporter and `--format otlp-json`.

A *series* is a target key + a metric + an attribute set. Attribute sets travel as tuples of (key, value)
pairs in the order the collector wrote them (the same order every cycle for one series), which is also
what the encoder's cache of serialized attribute sets is keyed by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kpod_otel.catalog import InstrumentSpec
from kpod_otel.model import AttrValue

__all__ = ["NO_RECORDED_VALUE", "AttrKey", "HistogramDataPoint", "HistogramPoints", "MetricPoints", "NumberPoint",
           "NumberPoints", "TargetPoints"]

# DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK (metrics.proto): the series has ended (its pod,
# container, interface or volume is gone); the point carries no value.
NO_RECORDED_VALUE = 1

AttrKey = tuple[tuple[str, AttrValue], ...]


@dataclass(slots=True)
class NumberPoint:
    """A sum or gauge point. `start_ns` is 0 for gauges; `value` is meaningless when flagged."""

    attributes: AttrKey
    start_ns: int
    value: int | float
    flags: int = 0


@dataclass(slots=True)
class HistogramDataPoint:
    """An explicit-bucket histogram point; count == sum(bucket_counts) always (empty when flagged)."""

    attributes: AttrKey
    start_ns: int
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    sum: float
    count: int
    flags: int = 0


@dataclass(slots=True)
class NumberPoints:
    """The sum or gauge points of one metric, column by column (a cycle holds thousands: one list
    append per field is much cheaper than one object per point). `numbers()` gives them as objects."""

    spec: InstrumentSpec
    attributes: list[AttrKey] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    values: list[int | float] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    # DELTA temporality (each point counts from the previous point of its series, its start time)
    # instead of CUMULATIVE (export/temporality.py). Gauges: always False.
    delta: bool = False

    def __len__(self) -> int:
        return len(self.values)

    def add(self, attributes: AttrKey, start_ns: int, value: int | float, flags: int = 0) -> None:
        self.attributes.append(attributes)
        self.starts.append(start_ns)
        self.values.append(value)
        self.flags.append(flags)

    def points(self) -> list[NumberPoint]:
        return [NumberPoint(*p) for p in zip(self.attributes, self.starts, self.values, self.flags, strict=True)]


@dataclass(slots=True)
class HistogramPoints:
    spec: InstrumentSpec
    points: list[HistogramDataPoint] = field(default_factory=list)
    delta: bool = False  # as NumberPoints.delta

    def __len__(self) -> int:
        return len(self.points)


MetricPoints = NumberPoints | HistogramPoints


@dataclass(slots=True)
class TargetPoints:
    """One target's points of one cycle (one OTLP ResourceMetrics)."""

    key: str  # Target.key, or AGENT_TARGET_KEY for the agent's own Resource
    resource: Mapping[str, AttrValue]
    metrics: dict[str, MetricPoints] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return sum(len(m) for m in self.metrics.values())

    def numbers(self, metric: str) -> list[NumberPoint]:
        """The sum/gauge points of `metric` (empty when absent)."""
        m = self.metrics.get(metric)
        return m.points() if isinstance(m, NumberPoints) else []

    def histograms(self, metric: str) -> list[HistogramDataPoint]:
        m = self.metrics.get(metric)
        return m.points if isinstance(m, HistogramPoints) else []
