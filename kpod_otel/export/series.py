"""Per-series state: what turns a collector's raw kernel values into series a backend can trust.

A series is a target key + a metric + an attribute set. For each one this keeps its start time, the
last raw value and when it was seen, and an offset (the baseline subtracted from raw values), so that
(OTel data model, "Resets and Gaps"):

- **Start time from the source.** A new cumulative series starts at its collector's `origin_ns(target,
  metric)` (a time no later than the first event its source could have counted: the pod's creation for
  cgroup files and interface counters, the later of the program's load and the pod's creation for eBPF). When
  the origin is unknown (or later than now), the first observation is the baseline: the series starts
  then and reports only what was counted after it, never a lifetime total under a recent start time.
- **Resets.** A monotonic sum (or a histogram bucket) that goes down starts a new series at the time of
  its previous observation (the reset happened after it); nothing is ever exported as a decrease under
  one start time.
- **End of series.** A series not reported in a cycle is exported once with the NO_RECORDED_VALUE flag
  and forgotten; unless its collector failed as a whole this cycle (a gap in the agent, not an end).
  A series that comes back within `ENDED_MEMORY_CYCLES` cycles of its end restarts with a baseline, so
  it never continues under the start time its end marker closed.
- **Histograms.** count == sum(bucket_counts) on every point, whatever the source sent.
- **Delta** (the metrics in `delta`, export/temporality.py). Each point counts what happened since the
  previous point of its series, and starts at that point's time: the points of a series are contiguous
  and add up exactly to the change of the source's value. The first point of a series counts from its
  start (as above); a reset starts the next point at the previous observation, with the value counted
  since (never a negative delta); an end marker starts at the series' last point. One more rule: a
  delta series never starts before `delta_since_ns` (the agent's start). A cumulative point restates a
  total under its start time, so a restarted agent may repeat it; a delta point is added up by the
  backend, and what happened before this process started may already have been sent by its
  predecessor: such a series starts with a baseline.

What is kept per series (start, offset, last raw value, time of the last observation) is what the delta
needs too: the previous cumulative value is `last - offset`, the previous time `last_ns` (histograms
also keep the last raw sum). Nothing more per series, whatever the temporality.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kpod_otel.catalog import InstrumentKind, InstrumentSpec
from kpod_otel.collector import CollectorSnapshot, HistogramPoint, Observation
from kpod_otel.model import AttrValue
from kpod_otel.points import (
    NO_RECORDED_VALUE,
    AttrKey,
    HistogramDataPoint,
    HistogramPoints,
    NumberPoints,
    TargetPoints,
)

# How long an ended series is remembered (cycles; ~10 min at 15 s), so that one which comes back (a
# container whose files could not be read for a cycle) restarts with a baseline.
ENDED_MEMORY_CYCLES = 40

_COUNTER, _UP_DOWN, _GAUGE, _HISTOGRAM = (InstrumentKind.COUNTER, InstrumentKind.UP_DOWN_COUNTER,
                                          InstrumentKind.GAUGE, InstrumentKind.HISTOGRAM)


class _Number:
    __slots__ = ("attrs", "last", "last_ns", "offset", "source", "start_ns")

    def __init__(self, start_ns: int, offset: int | float, last: int | float, last_ns: int, source: int) -> None:
        self.attrs: AttrKey = ()  # the series' key, kept: points refer to it instead of a fresh copy
        self.start_ns = start_ns
        self.offset = offset
        self.last = last
        self.last_ns = last_ns
        self.source = source


class _Histogram:
    __slots__ = ("bounds", "last", "last_ns", "last_sum", "offset", "offset_sum", "source", "start_ns")

    def __init__(self, start_ns: int, bounds: tuple[float, ...], offset: tuple[int, ...] | None, offset_sum: float,
                 last: tuple[int, ...], last_sum: float, last_ns: int, source: int) -> None:
        self.start_ns = start_ns
        self.bounds = bounds
        self.offset = offset  # baseline bucket counts, None when the source's start is known
        self.offset_sum = offset_sum
        self.last = last
        self.last_sum = last_sum
        self.last_ns = last_ns
        self.source = source

    def cumulative(self, counts: tuple[int, ...], total: float) -> tuple[tuple[int, ...], float]:
        """Raw bucket counts and sum of the source, as counted since the series' start."""
        if self.offset is None:
            return counts, total
        return tuple(c - o for c, o in zip(counts, self.offset, strict=True)), max(0.0, total - self.offset_sum)


@dataclass(slots=True)
class _TargetState:
    resource: Mapping[str, AttrValue]
    numbers: dict[str, dict[AttrKey, _Number]] = field(default_factory=dict)
    histograms: dict[str, dict[AttrKey, _Histogram]] = field(default_factory=dict)
    series: int = 0  # how many series `numbers` and `histograms` hold
    seen: int = 0  # how many of them were reported this cycle (all: nothing ends, no need to look)


@dataclass(frozen=True, slots=True)
class SourceInput:
    """One collector's contribution to a cycle. `snapshot` None: the collector failed as a whole (its
    series are neither reported nor ended). `origin(target_key, metric)`: see the module docstring."""

    source: int
    snapshot: CollectorSnapshot | None
    origin: Callable[[str, str], int | None]


# Called with (target key, what went wrong) when a value cannot be used; the target's points of that
# metric are dropped for this cycle.
ProblemHook = Callable[[str, str], None]


class SeriesTracker:
    def __init__(self, specs: Mapping[str, InstrumentSpec], delta: frozenset[str] = frozenset(),
                 delta_since_ns: int = 0) -> None:
        """`delta`: the metrics exported as DELTA; `delta_since_ns`: the earliest start of a delta series."""
        self._specs = specs
        self._delta = delta
        self._delta_since_ns = delta_since_ns
        self._targets: dict[str, _TargetState] = {}
        # Series (and whole targets) that ended recently, in two generations of ENDED_MEMORY_CYCLES. The
        # series (metric, attributes) of a target are kept under its key, and dropped when the whole
        # target ends (its key alone then says it): under pod churn, what is remembered per ended pod is
        # its key, not every series it had.
        self._ended: dict[str, set[tuple[str, AttrKey]]] = {}
        self._ended_before: dict[str, set[tuple[str, AttrKey]]] = {}
        self._ended_targets: set[str] = set()
        self._ended_targets_before: set[str] = set()
        self._cycles = 0

    @property
    def targets(self) -> int:
        return len(self._targets)

    @property
    def remembered(self) -> int:
        """Ended series remembered by their identity (those of targets that are still measured)."""
        return sum(len(s) for g in (self._ended, self._ended_before) for s in g.values())

    @property
    def series(self) -> int:
        return sum(t.series for t in self._targets.values())

    def cycle(self, now_ns: int, live: Mapping[str, Mapping[str, AttrValue]], inputs: Sequence[SourceInput],
              problem: ProblemHook) -> tuple[list[TargetPoints], list[str]]:
        """One cycle: `live` maps each target key to its Resource, in export order. Returns the targets'
        points (live ones in that order, then those that ended with their end markers) and the names of
        undeclared metrics that were dropped."""
        self._cycles += 1
        if self._cycles % ENDED_MEMORY_CYCLES == 0:
            self._ended_before, self._ended = self._ended, {}
            self._ended_targets_before, self._ended_targets = self._ended_targets, set()
        out: dict[str, TargetPoints] = {}
        for key, resource in live.items():
            state = self._targets.get(key)
            if state is None:
                self._targets[key] = _TargetState(resource)
            else:
                state.resource = resource
                state.seen = 0
            out[key] = TargetPoints(key, resource)
        dropped: list[str] = []
        failed: set[int] = set()
        for inp in inputs:
            if inp.snapshot is None:
                failed.add(inp.source)
                continue
            for key, by_metric in inp.snapshot.points.items():
                target = out.get(key)
                if target is None:
                    continue  # a target that is not measured this cycle
                state = self._targets[key]
                for name, observations in by_metric.items():
                    spec = self._specs.get(name)
                    if spec is None or spec.kind is _HISTOGRAM:
                        dropped.append(name)
                        continue
                    try:
                        self._numbers(now_ns, key, state, target, spec, observations, inp)
                    except (TypeError, ValueError, OverflowError) as exc:
                        problem(key, f"{name}: {exc}")
            for key, hists in inp.snapshot.histograms.items():
                target = out.get(key)
                if target is None:
                    continue
                state = self._targets[key]
                for h in hists:
                    spec = self._specs.get(h.name)
                    if spec is None or spec.kind is not _HISTOGRAM:
                        dropped.append(h.name)
                        continue
                    try:
                        self._histogram(now_ns, key, state, target, spec, h, inp)
                    except (TypeError, ValueError, OverflowError) as exc:
                        problem(key, f"{h.name}: {exc}")
        ended: list[TargetPoints] = []
        for key in list(self._targets):
            state = self._targets[key]
            target = out.get(key)
            if target is None:  # the target is gone: every series of it ends
                gone = TargetPoints(key, state.resource)
                self._end(now_ns, key, state, gone, None)
                del self._targets[key]
                self._ended.pop(key, None)
                self._ended_before.pop(key, None)
                self._ended_targets.add(key)
                if gone.metrics:
                    ended.append(gone)
            else:
                self._end(now_ns, key, state, target, failed)
        return [*out.values(), *ended], dropped

    # --- numbers ------------------------------------------------------------------------------------

    def _numbers(self, now_ns: int, key: str, state: _TargetState, target: TargetPoints, spec: InstrumentSpec,
                 observations: Iterable[Observation], inp: SourceInput) -> None:
        name = spec.name
        series = state.numbers.get(name)
        if series is None:
            series = state.numbers[name] = {}
        delta = name in self._delta
        out = target.metrics.get(name)
        if not isinstance(out, NumberPoints):
            out = target.metrics[name] = NumberPoints(spec, delta=delta)
        counter = spec.kind is _COUNTER
        source = inp.source
        get = series.get
        attributes, starts = out.attributes.append, out.starts.append
        values, flags = out.values.append, out.flags.append
        for obs in observations:
            value = obs.value
            if value.__class__ is not int and value.__class__ is not float:
                raise TypeError(f"value {value!r} is not a number")
            attrs = tuple(obs.attributes.items())
            s = get(attrs)
            # (delta) the cumulative value of the series' previous point, and its time
            previous: int | float
            if s is None:
                s = series[attrs] = self._new_number(now_ns, key, name, attrs, spec.kind, value, inp, delta)
                s.attrs = attrs
                state.series += 1
                previous, since = 0, s.start_ns
            elif s.last_ns == now_ns:
                continue  # reported twice in one cycle (two collectors): the first one counts
            elif counter and value < s.last:  # a reset: a new series since the last observation
                s.start_ns, s.offset = s.last_ns, 0
                previous, since = 0, s.start_ns
            else:
                previous, since = s.last - s.offset, s.last_ns
            s.last, s.last_ns, s.source = value, now_ns, source
            state.seen += 1
            attributes(s.attrs)
            if delta:
                starts(since)
                values(value - s.offset - previous)
            else:
                starts(s.start_ns)
                values(value - s.offset)
            flags(0)

    def _new_number(self, now_ns: int, key: str, name: str, attrs: AttrKey, kind: InstrumentKind,
                    value: int | float, inp: SourceInput, delta: bool) -> _Number:
        if kind is _GAUGE:
            return _Number(0, 0, value, now_ns, inp.source)
        origin = self._origin(now_ns, key, name, attrs, inp, delta)
        if origin is not None:
            return _Number(origin, 0, value, now_ns, inp.source)
        # Unknown origin: what was counted before now is not this series' (an up-down counter is a
        # level, not a count: it keeps its value and only gets the start).
        return _Number(now_ns, value if kind is _COUNTER else 0, value, now_ns, inp.source)

    def _origin(self, now_ns: int, key: str, name: str, attrs: AttrKey, inp: SourceInput,
                delta: bool) -> int | None:
        if key in self._ended_targets or key in self._ended_targets_before:
            return None
        identity = (name, attrs)
        ended = False
        for generation in (self._ended, self._ended_before):
            series = generation.get(key)
            if series is not None and identity in series:
                ended = True
                series.discard(identity)
                if not series:
                    del generation[key]
        if ended:
            return None
        origin = inp.origin(key, name)
        if origin is None or origin <= 0 or origin > now_ns or (delta and origin < self._delta_since_ns):
            return None
        return origin

    # --- histograms ---------------------------------------------------------------------------------

    def _histogram(self, now_ns: int, key: str, state: _TargetState, target: TargetPoints, spec: InstrumentSpec,
                   h: HistogramPoint, inp: SourceInput) -> None:
        counts = tuple(h.bucket_counts)
        if len(counts) != len(h.bounds) + 1:
            raise ValueError(f"{len(counts)} bucket counts for {len(h.bounds)} bounds")
        if min(counts) < 0:  # (never empty: one more count than bounds)
            raise ValueError("negative bucket count")
        name = spec.name
        delta = name in self._delta
        series = state.histograms.get(name)
        if series is None:
            series = state.histograms[name] = {}
        attrs = tuple(h.attributes.items())
        s = series.get(attrs)
        previous: tuple[tuple[int, ...], float] | None = None  # (delta) the previous point, cumulative
        if s is None:
            origin = self._origin(now_ns, key, name, attrs, inp, delta)
            if origin is None:
                s = _Histogram(now_ns, h.bounds, counts, h.sum, counts, h.sum, now_ns, inp.source)
            else:
                s = _Histogram(origin, h.bounds, None, 0.0, counts, h.sum, now_ns, inp.source)
            series[attrs] = s
            state.series += 1
            since = s.start_ns
        elif s.last_ns == now_ns:
            return
        elif s.bounds != h.bounds or (counts != s.last and not all(map(operator.ge, counts, s.last))):
            s.start_ns, s.bounds, s.offset, s.offset_sum = s.last_ns, h.bounds, None, 0.0
            since = s.start_ns
        else:
            previous, since = s.cumulative(s.last, s.last_sum), s.last_ns
        s.last, s.last_sum, s.last_ns, s.source = counts, h.sum, now_ns, inp.source
        state.seen += 1
        counts, total = s.cumulative(counts, h.sum)
        if not delta:
            since = s.start_ns
        elif previous is not None:
            counts = tuple(c - p for c, p in zip(counts, previous[0], strict=True))
            total = max(0.0, total - previous[1])
        out = target.metrics.get(name)
        if not isinstance(out, HistogramPoints):
            out = target.metrics[name] = HistogramPoints(spec, delta=delta)
        out.points.append(HistogramDataPoint(attrs, since, h.bounds, counts, total, sum(counts)))

    # --- end of series ------------------------------------------------------------------------------

    def _end(self, now_ns: int, key: str, state: _TargetState, target: TargetPoints, failed: set[int] | None) -> None:
        """Flag and forget the series of `state` not seen this cycle (all of them when `failed` is None:
        the target is gone)."""
        if failed is not None and state.seen == state.series:
            return
        emptied = False
        for name, series in state.numbers.items():
            gone = [a for a, s in series.items()
                    if s.last_ns != now_ns and (failed is None or s.source not in failed)]
            if not gone:
                continue
            delta = name in self._delta
            out = target.metrics.get(name)
            if not isinstance(out, NumberPoints):
                out = target.metrics[name] = NumberPoints(self._specs[name], delta=delta)
            for a in gone:
                out.add(a, _end_start(series.pop(a), delta), 0, NO_RECORDED_VALUE)
            state.series -= len(gone)
            if failed is not None:  # (a whole target is remembered by its key)
                self._remember(key, name, gone)
            emptied = emptied or not series
        for name, hseries in state.histograms.items():
            gone = [a for a, s in hseries.items()
                    if s.last_ns != now_ns and (failed is None or s.source not in failed)]
            if not gone:
                continue
            delta = name in self._delta
            hout = target.metrics.get(name)
            if not isinstance(hout, HistogramPoints):
                hout = target.metrics[name] = HistogramPoints(self._specs[name], delta=delta)
            for a in gone:
                hout.points.append(HistogramDataPoint(a, _end_start(hseries.pop(a), delta), (), (), 0.0, 0,
                                                      NO_RECORDED_VALUE))
            state.series -= len(gone)
            if failed is not None:
                self._remember(key, name, gone)
            emptied = emptied or not hseries
        if emptied:
            state.numbers = {n: s for n, s in state.numbers.items() if s}
            state.histograms = {n: s for n, s in state.histograms.items() if s}

    def _remember(self, key: str, name: str, gone: Iterable[AttrKey]) -> None:
        self._ended.setdefault(key, set()).update((name, a) for a in gone)


def _end_start(s: _Number | _Histogram, delta: bool) -> int:
    """The start of a series' end marker: its start, or (delta) the time of its last point."""
    return s.last_ns if delta else s.start_ns
