"""The seam between collectors and the export pipeline.

A collector declares its instruments once (from the metric catalog, `kpod_otel.catalog`), then each cycle
reads its sources *once* into a `CollectorSnapshot`: raw values (as the kernel counts them) grouped by
target key and metric name, and histograms already bucketed by the kernel as `HistogramPoint`s. The
pipeline (`kpod_otel.export.pipeline`) turns them into series (`export/series.py`: start times, resets,
end of series) and structured points per target. A collector says since when its values of a target
have been counting (`origin_ns`, per metric) and whether a container without an entry in its source has simply had
no event yet (`first_event_zeros`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from kpod_otel.catalog import InstrumentKind, InstrumentSpec
from kpod_otel.model import Attributes, ContainerTarget, Target

__all__ = ["AGENT_TARGET_KEY", "Collector", "CollectorSnapshot", "HistogramPoint", "InstrumentKind", "InstrumentSpec",
           "Observation"]

AGENT_TARGET_KEY = "__agent__"


@dataclass(frozen=True, slots=True)
class Observation:
    value: int | float
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """A cumulative histogram whose buckets were counted elsewhere (the kernel).

    `bounds` are the explicit upper bounds (inclusive, in the instrument's unit); `bucket_counts` has
    len(bounds) + 1 entries, the last one for values above the last bound.
    """

    name: str
    attributes: Attributes
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    sum: float
    count: int
    min: float | None = None
    max: float | None = None


@dataclass(slots=True)
class CollectorSnapshot:
    """Everything one collector read in one cycle."""

    # target key -> metric name -> observations
    points: dict[str, dict[str, list[Observation]]] = field(default_factory=dict)
    # target key -> histogram points
    histograms: dict[str, list[HistogramPoint]] = field(default_factory=dict)
    # The source could not be read at all this cycle (a BPF map read failed): a gap, not the end of
    # the collector's series.
    failed: bool = False

    def add(self, target_key: str, metric: str, value: int | float, attributes: Attributes) -> None:
        by_metric = self.points.get(target_key)  # (setdefault would build a {} and a [] on every call)
        if by_metric is None:
            by_metric = self.points[target_key] = {}
        observations = by_metric.get(metric)
        if observations is None:
            observations = by_metric[metric] = []
        observations.append(Observation(value, attributes))

    def add_histogram(self, target_key: str, point: HistogramPoint) -> None:
        self.histograms.setdefault(target_key, []).append(point)


class Collector(ABC):
    """One source of metrics (a cgroup file family, a BPF program, the agent itself)."""

    name: str

    @abstractmethod
    def instruments(self) -> Sequence[InstrumentSpec]:
        """The metrics this collector can produce; fixed for the collector's lifetime."""

    @abstractmethod
    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        """Read every source once and return this cycle's observations.

        Must not raise for a problem that concerns one target (a vanished cgroup, a malformed file):
        skip that target's points, log, and count it through the agent's self-metrics.
        """

    def origin_ns(self, target: Target, metric: str) -> int | None:
        """A time no later than the first event this collector's cumulative values of `metric` for
        `target` can include, or None when unknown (the pipeline then takes the first observation as the
        baseline). Kernel objects of a pod (cgroups, its network namespace) are created after the pod
        object. A collector composing sources that count from different times (eBPF since its program's
        load, cgroup files since the cgroup's creation) says per metric."""
        return target.created_ns or None

    def first_event_zeros(self, container: ContainerTarget, metric: str) -> bool:
        """True when the collector's source of `metric` holds no entry for `container` until its first
        event (a BPF map): that first-event counter is then exported as 0 for it. A file-based source always
        holds a value, and a missing one is a read problem, not a 0."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release kernel objects (BPF programs, netlink sockets)."""
