"""Reading what the agent exported: one OTLP request per cycle, looked at per pod Resource."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from tests.export.helpers import attrs, by_resource
from tests.fakes.otlp import OtlpReceiver

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def collected_at(req: ExportMetricsServiceRequest) -> int:
    """When the cycle of this request started collecting (time_unix_nano of its points)."""
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                for dp in getattr(m, kind).data_points:
                    return int(dp.time_unix_nano)
    return 0


@dataclass
class Cycle:
    """One export: pod uid (or service.name) -> {"resource": attrs, metric name: Metric}."""

    at_ns: int
    resources: dict[str, dict[str, Any]]

    def pod(self, uid: str) -> dict[str, Any]:
        return self.resources[uid]


def cycle_of(req: ExportMetricsServiceRequest) -> Cycle:
    return Cycle(collected_at(req), by_resource([req]))


def wait_cycle_after(receiver: OtlpReceiver, t_ns: int, timeout: float = 15.0) -> Cycle:
    """The first export whose collection started after wall-clock time `t_ns`."""
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        received = receiver.wait_for(seen + 1, timeout=max(0.1, deadline - time.monotonic()))
        for item in received[seen:]:
            cycle = cycle_of(item.request)
            if cycle.at_ns > t_ns:
                return cycle
        seen = len(received)


def points(resource: dict[str, Any], metric: str) -> list[tuple[dict[str, Any], Any]]:
    m = resource[metric]
    return [(attrs(dp.attributes), dp) for dp in getattr(m, m.WhichOneof("data")).data_points]


def matching(resource: dict[str, Any], metric: str, **want: object) -> list[Any]:
    if metric not in resource:
        return []
    return [dp for a, dp in points(resource, metric) if all(a.get(k) == v for k, v in want.items())]


def number(resource: dict[str, Any], metric: str, **want: object) -> float:
    """Sum over the points of `metric` whose attributes include `want` (0 when there are none)."""
    return float(sum(dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                     for dp in matching(resource, metric, **want)))


@dataclass(frozen=True)
class Hist:
    count: int
    sum: float
    bucket_counts: tuple[int, ...]
    bounds: tuple[float, ...]

    def __sub__(self, other: Hist) -> Hist:
        assert self.bounds == other.bounds
        return Hist(self.count - other.count, self.sum - other.sum,
                    tuple(a - b for a, b in zip(self.bucket_counts, other.bucket_counts, strict=True)),
                    self.bounds)


def histogram(resource: dict[str, Any], metric: str, **want: object) -> Hist | None:
    dps = matching(resource, metric, **want)
    assert len(dps) <= 1, dps
    if not dps:
        return None
    dp = dps[0]
    return Hist(int(dp.count), float(dp.sum), tuple(dp.bucket_counts), tuple(dp.explicit_bounds))
