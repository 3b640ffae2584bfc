"""One cycle: run every collector once, turn their values into series (`export/series.py`), and hand
the structured points to the sinks; encoding into OTLP happens only when a sink asks for the bytes.

Each target's Resource is its identity (plus the cluster-wide part of OTEL_RESOURCE_ATTRIBUTES); the
agent's own metrics go on the agent Resource, recognised by its key (AGENT_TARGET_KEY), never by its
attributes. What is kept across cycles: the per-series state (start, last value, offset), dropped when
a series ends, and the encoded attribute sets of the last two cycles (AttributeCache) — so pod churn
cannot grow memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from kpod_otel import __version__
from kpod_otel.catalog import CATALOG, Level
from kpod_otel.collector import AGENT_TARGET_KEY, Collector, CollectorSnapshot, InstrumentSpec
from kpod_otel.export.encoder import AttributeCache, EncodedResource, ResourceEncoder, join_request
from kpod_otel.export.series import SeriesTracker, SourceInput
from kpod_otel.export.temporality import TemporalityPreference, delta_metrics
from kpod_otel.model import AttrValue, Target
from kpod_otel.points import TargetPoints
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

SCOPE_NAME = "kpod-otel"
_COMPONENT = "pipeline"


@dataclass(slots=True)
class CycleResult:
    """One cycle's points, per target: pods (and local workloads) in discovery order, the agent's own
    Resource, then targets that left since the last cycle (their end-of-series points)."""

    time_ns: int
    targets: list[TargetPoints]
    collect_seconds: float
    collector_seconds: dict[str, float] = field(default_factory=dict)
    encode: Callable[[CycleResult], list[EncodedResource]] | None = None
    _resources: list[EncodedResource] | None = None
    _request: ExportMetricsServiceRequest | None = None

    @property
    def points(self) -> int:
        return sum(t.points for t in self.targets)

    @property
    def agent(self) -> TargetPoints | None:
        return next((t for t in self.targets if t.key == AGENT_TARGET_KEY), None)

    @property
    def workloads(self) -> list[TargetPoints]:
        """Every target but the agent itself."""
        return [t for t in self.targets if t.key != AGENT_TARGET_KEY]

    def target(self, key: str) -> TargetPoints | None:
        return next((t for t in self.targets if t.key == key), None)

    @property
    def resources(self) -> list[EncodedResource]:
        """The cycle's ResourceMetrics in OTLP wire format (encoded once, on first use: the exporter)."""
        if self._resources is None:
            self._resources = self.encode(self) if self.encode is not None else []
        return self._resources

    @property
    def request(self) -> ExportMetricsServiceRequest:
        """The encoded request as a protobuf message (for `--format otlp-json` and tests)."""
        if self._request is None:
            self._request = ExportMetricsServiceRequest.FromString(join_request(self.resources))
        return self._request


class MetricsPipeline:
    """Collectors -> series -> structured points per cycle (-> OTLP bytes on demand)."""

    def __init__(
        self,
        collectors: Sequence[Collector],
        agent_resource: Mapping[str, AttrValue],
        stats: AgentStats,
        common_attributes: Mapping[str, AttrValue] | None = None,
        unknown_origin_ns: int | None = None,
        temporality: TemporalityPreference = TemporalityPreference.CUMULATIVE,
    ) -> None:
        """`unknown_origin_ns`: the start of a series whose collector knows no origin for its target.
        None (the agent): the first observation is its baseline. `snapshot`, which reads once and has
        no history, passes the boot time, a lower bound of every kernel object's creation, so it shows
        the kernel's totals."""
        self._collectors = list(collectors)
        self._unknown_origin_ns = unknown_origin_ns
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
        # Per collector: its container-level counters whose first event is the whole signal (catalog).
        self._first_event: list[tuple[str, ...]] = []
        for c in self._collectors:
            names = []
            for spec in c.instruments():
                entry = CATALOG.get(spec.name)
                if entry is not None and entry.first_event and entry.level is Level.CONTAINER:
                    names.append(spec.name)
            self._first_event.append(tuple(names))
        # A delta series starts no earlier than this process (export/series.py says why).
        self._series = SeriesTracker(self._specs, delta_metrics(temporality, self._specs.values()),
                                     delta_since_ns=stats.started_ns)
        self._warned_undeclared: set[str] = set()
        self._warned_targets: set[str] = set()
        self._attributes = AttributeCache()  # encoded attribute sets, forgotten one cycle after last use

    @property
    def collectors(self) -> list[Collector]:
        return list(self._collectors)

    @property
    def tracked_targets(self) -> int:
        return self._series.targets - 1  # the agent's own is always there

    @property
    def tracked_series(self) -> int:
        return self._series.series

    @property
    def remembered_series(self) -> int:
        """Ended series still remembered by identity (export/series.py: `ENDED_MEMORY_CYCLES`)."""
        return self._series.remembered

    @property
    def cached_attribute_sets(self) -> int:
        return len(self._attributes)

    def collect(self, targets: Sequence[Target]) -> CycleResult:
        started = time.perf_counter()
        now_ns = time.time_ns()
        by_key = {t.key: t for t in targets}
        self._stats.set("kpod.agent.targets", len(by_key))

        inputs: list[SourceInput] = []
        durations: dict[str, float] = {}
        for index, collector in enumerate(self._collectors):
            t0 = time.perf_counter()
            snapshot = self._collect_one(collector, targets)
            if snapshot is not None and self._first_event[index]:
                self._first_event_zeros(collector, self._first_event[index], snapshot, targets)
            durations[collector.name] = time.perf_counter() - t0
            # set at once, so the self-metrics collector (always last) reports this cycle's figures
            self._stats.set(
                "kpod.agent.collector.duration", durations[collector.name], **{"kpod.collector": collector.name}
            )
            inputs.append(SourceInput(index, snapshot, self._origin(collector, by_key)))

        live: dict[str, Mapping[str, AttrValue]] = {
            key: {**self._common, **t.resource} if self._common else t.resource for key, t in by_key.items()}
        live[AGENT_TARGET_KEY] = self._agent_resource
        points, dropped = self._series.cycle(now_ns, live, inputs, self._value_problem)
        self._report_dropped(dropped)
        return CycleResult(now_ns, points, time.perf_counter() - started, durations, self._encode)

    def _origin(self, collector: Collector, by_key: Mapping[str, Target]) -> Callable[[str, str], int | None]:
        agent_start = self._stats.started_ns
        fallback = self._unknown_origin_ns

        def origin(key: str, metric: str) -> int | None:
            if key == AGENT_TARGET_KEY:
                return agent_start  # the agent's counters count since its stats were created
            target = by_key.get(key)
            if target is None:
                return None
            known = collector.origin_ns(target, metric)
            return known if known is not None else fallback

        return origin

    @staticmethod
    def _first_event_zeros(collector: Collector, metrics: Sequence[str], snapshot: CollectorSnapshot,
                           targets: Sequence[Target]) -> None:
        """0 for every container the collector measures but whose source has no entry yet, so the first
        event is a visible 0 -> 1 step (rate(), increase(), delta conversion)."""
        for target in targets:
            present: dict[str, set[frozenset[tuple[str, AttrValue]]]] = {}
            for container in target.containers:
                names = [name for name in metrics if collector.first_event_zeros(container, name)]
                if not names:
                    continue
                attrs = dict(sorted(container.attributes().items()))
                key = frozenset(attrs.items())
                for name in names:
                    seen = present.get(name)
                    if seen is None:
                        observed = snapshot.points.get(target.key, {}).get(name, ())
                        seen = present[name] = {frozenset(o.attributes.items()) for o in observed}
                    if key not in seen:
                        snapshot.add(target.key, name, 0, attrs)

    def _collect_one(self, collector: Collector, targets: Sequence[Target]) -> CollectorSnapshot | None:
        """The collector's snapshot; None when it failed as a whole (its series then wait, not end)."""
        try:
            snapshot = collector.collect(targets)
        except Exception:
            # A collector bug must cost only that collector's points for this cycle.
            log.exception("collector %s failed this cycle", collector.name)
            self._stats.error(collector.name, "collect")
            return None
        return None if snapshot.failed else snapshot

    def _value_problem(self, target_key: str, what: str) -> None:
        self._stats.error(_COMPONENT, "value")
        if target_key not in self._warned_targets:
            self._warned_targets.add(target_key)
            log.warning("target %s: dropped a value that is not a valid measurement (%s)", target_key, what)

    def _encode(self, result: CycleResult) -> list[EncodedResource]:
        """Every target's ResourceMetrics; a target whose points cannot be encoded (an integer beyond 64
        bits, a string that is not UTF-8, any other exception) costs only its own points."""
        self._attributes.next_cycle()
        encoder = ResourceEncoder(SCOPE_NAME, __version__, result.time_ns, self._attributes)
        out: list[EncodedResource] = []
        for target in result.targets:
            try:
                encoded = encoder.encode(target)
            except Exception as exc:
                self._stats.error(_COMPONENT, "encode")
                if target.key not in self._warned_targets:
                    self._warned_targets.add(target.key)
                    log.warning("target %s: its points cannot be encoded, dropped (%s: %s)", target.key,
                                type(exc).__name__, exc)
                continue
            if encoded is not None:
                out.append(encoded)
        self._warned_targets &= {t.key for t in result.targets}
        return out

    def _report_dropped(self, names: list[str]) -> None:
        for name in names:
            self._stats.error(_COMPONENT, "undeclared_metric")
            if name not in self._warned_undeclared:
                self._warned_undeclared.add(name)
                log.error("metric %s is not declared (or has the wrong kind) by any collector: dropped", name)

    def close(self) -> None:
        for collector in self._collectors:
            try:
                collector.close()
            except Exception:
                log.exception("closing collector %s failed", collector.name)
