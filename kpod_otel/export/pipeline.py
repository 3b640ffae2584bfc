"""One cycle: run every collector once, then encode one ResourceMetrics per target (pod).

Each target's Resource is its identity (plus OTEL_RESOURCE_ATTRIBUTES); the agent's own metrics go on
the agent Resource. The only state kept across cycles is each target's start time (the start of its
cumulative series), dropped when the target leaves, and the encoded attribute sets of the last two
cycles (AttributeCache, serialized) — so pod churn cannot grow memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from kpod_otel import __version__
from kpod_otel.collector import (
    AGENT_TARGET_KEY,
    Collector,
    CollectorSnapshot,
    HistogramPoint,
    InstrumentSpec,
    Observation,
)
from kpod_otel.export.encoder import AttributeCache, EncodedResource, RequestBuilder
from kpod_otel.model import AttrValue, Target
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

SCOPE_NAME = "kpod-otel"


@dataclass(slots=True)
class CycleResult:
    builder: RequestBuilder
    points: int
    collect_seconds: float
    collector_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def resources(self) -> list[EncodedResource]:
        """The cycle's ResourceMetrics, serialized (what the exporter sends)."""
        return self.builder.resources

    @property
    def request(self) -> ExportMetricsServiceRequest:
        """The cycle's request as a protobuf message (parsed on first use)."""
        return self.builder.request


class MetricsPipeline:
    """Collectors -> snapshots -> one OTLP request per cycle."""

    def __init__(
        self,
        collectors: Sequence[Collector],
        agent_resource: Mapping[str, AttrValue],
        stats: AgentStats,
        common_attributes: Mapping[str, AttrValue] | None = None,
    ) -> None:
        self._collectors = list(collectors)
        self._stats = stats
        self._common = dict(common_attributes or {})
        self._agent_resource = dict(agent_resource)
        # Two collectors may serve one metric for different containers (eBPF and the cgroup files for
        # the memory counters) if they declare it identically.
        self._specs: dict[str, InstrumentSpec] = {}
        for spec in (spec for c in self._collectors for spec in c.instruments()):
            known = self._specs.setdefault(spec.name, spec)
            if known != spec:
                raise ValueError(f"metric {spec.name} declared differently by two collectors: {known} / {spec}")
        self._start_ns: dict[str, int] = {AGENT_TARGET_KEY: time.time_ns()}
        self._warned_undeclared: set[str] = set()
        self._attributes = AttributeCache()  # encoded attribute sets, forgotten one cycle after last use

    @property
    def collectors(self) -> list[Collector]:
        return list(self._collectors)

    @property
    def tracked_targets(self) -> int:
        return len(self._start_ns) - 1

    @property
    def cached_attribute_sets(self) -> int:
        return len(self._attributes)

    def collect(self, targets: Sequence[Target]) -> CycleResult:
        started = time.perf_counter()
        now_ns = time.time_ns()
        live = {t.key for t in targets}
        for key in [k for k in self._start_ns if k not in live and k != AGENT_TARGET_KEY]:
            del self._start_ns[key]
        for key in live:
            self._start_ns.setdefault(key, now_ns)
        self._stats.set("kpod.agent.targets", len(live))

        points: dict[str, dict[str, list[Observation]]] = {}
        histograms: dict[str, list[HistogramPoint]] = {}
        durations: dict[str, float] = {}
        for collector in self._collectors:
            t0 = time.perf_counter()
            snapshot = self._collect_one(collector, targets)
            durations[collector.name] = time.perf_counter() - t0
            # set at once, so the self-metrics collector (always last) reports this cycle's figures
            self._stats.set(
                "kpod.agent.collector.duration", durations[collector.name], **{"kpod.collector": collector.name}
            )
            for key, by_metric in snapshot.points.items():
                dest = points.setdefault(key, {})
                for name, observations in by_metric.items():
                    dest.setdefault(name, []).extend(observations)
            for key, hists in snapshot.histograms.items():
                histograms.setdefault(key, []).extend(hists)

        self._attributes.next_cycle()
        builder = RequestBuilder(self._specs, SCOPE_NAME, __version__, self._attributes)
        for target in targets:
            key = target.key
            if key in points or key in histograms:
                resource = {**self._common, **target.resource}
                self._report_dropped(builder.add_resource(
                    resource, points.get(key, {}), histograms.get(key, ()), self._start_ns[key], now_ns
                ))
        self._report_dropped(builder.add_resource(
            self._agent_resource, points.get(AGENT_TARGET_KEY, {}), histograms.get(AGENT_TARGET_KEY, ()),
            self._start_ns[AGENT_TARGET_KEY], now_ns,
        ))
        return CycleResult(builder, builder.points, time.perf_counter() - started, durations)

    def _collect_one(self, collector: Collector, targets: Sequence[Target]) -> CollectorSnapshot:
        try:
            return collector.collect(targets)
        except Exception:
            # A collector bug must cost only that collector's points for this cycle.
            log.exception("collector %s failed this cycle", collector.name)
            self._stats.error(collector.name, "collect")
            return CollectorSnapshot()

    def _report_dropped(self, names: list[str]) -> None:
        for name in names:
            self._stats.error("pipeline", "undeclared_metric")
            if name not in self._warned_undeclared:
                self._warned_undeclared.add(name)
                log.error("metric %s is not declared (or has the wrong kind) by any collector: dropped", name)

    def close(self) -> None:
        for collector in self._collectors:
            try:
                collector.close()
            except Exception:
                log.exception("closing collector %s failed", collector.name)
