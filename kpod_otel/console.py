"""A terminal table of one cycle's points: one row per target (pod or local workload).

Reads the cycle's structured points (never the encoded OTLP), and skips the agent's own Resource by its
key. CPU % (the rate of `kpod.cpu.time`, x100) and the memory working set lead; the other columns come
from the metric catalog: a counter whose first event is the signal (OOM kills, retransmits) shows its
total, other counters a per-second rate, histograms their mean over the interval, gauges their value; a
column appears once some target has a point of its metric. Under DELTA temporality
(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE) a point already is the interval's count: the rate and
the mean come from it alone, and a "total" column shows the last interval's count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kpod_otel.catalog import METRICS, InstrumentKind, Level, MetricDef
from kpod_otel.export.pipeline import CycleResult
from kpod_otel.points import TargetPoints


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    metric: str
    kind: str  # "rate": per-second rate of a cumulative sum; "value": current value; "mean": histogram mean
    scale: float = 1.0  # multiply before display (e.g. s -> ms, CPU s/s -> %)


def column_of(m: MetricDef) -> Column:
    short = m.name.removeprefix("kpod.")
    if m.kind is InstrumentKind.HISTOGRAM:
        return Column(f"{short} ms" if m.unit == "s" else short, m.name, "mean", 1000.0 if m.unit == "s" else 1.0)
    if m.kind is InstrumentKind.COUNTER and not m.first_event:
        return Column(f"{short}/s", m.name, "rate")
    return Column(short, m.name, "value")


# The columns a user looks at first, leading the table in a form of their own; every other metric of a
# pod or container follows in catalog order, shown as column_of says.
LEADING: tuple[Column, ...] = (
    Column("CPU %", "kpod.cpu.time", "rate", 100.0),  # CPU seconds per second, user + system
    Column("mem ws", "kpod.mem.working_set", "value"),
)
COLUMNS: tuple[Column, ...] = (*LEADING, *(
    column_of(m) for m in METRICS
    if m.level is not Level.AGENT and m.name not in {c.metric for c in LEADING}))


def _name(resource: Mapping[str, object], key: str) -> str:
    if "k8s.pod.name" in resource:
        return f"{resource.get('k8s.namespace.name', '?')}/{resource['k8s.pod.name']}"
    if "k8s.pod.uid" in resource:
        return f"pod {resource['k8s.pod.uid']}"
    return str(resource.get("kpod.workload.cgroup") or key)


def summarize_target(target: TargetPoints) -> dict[str, tuple[float, float]]:
    """metric -> (sum of values or histogram sums, histogram counts) over the target's live points."""
    row: dict[str, tuple[float, float]] = {}
    for name, mp in target.metrics.items():
        total = count = 0.0
        live = False
        if mp.spec.kind is InstrumentKind.HISTOGRAM:
            for h in target.histograms(name):
                if not h.flags:
                    total, count, live = total + h.sum, count + h.count, True
        else:
            for p in target.numbers(name):
                if not p.flags:
                    total, live = total + p.value, True
        if live:
            row[name] = (total, count)
    return row


def summarize(result: CycleResult) -> dict[str, dict[str, tuple[float, float]]]:
    """target name -> metric -> (sum of values or histogram sums, histogram counts); the agent excluded."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for target in result.workloads:
        row = summarize_target(target)
        if row:
            out.setdefault(_name(target.resource, target.key), {}).update(row)
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.1f}" if x != int(x) else str(int(x))


class TableRenderer:
    """Renders cycles; with a previous cycle, counters become per-second rates."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self._out = out
        self._previous: tuple[float, dict[str, dict[str, tuple[float, float]]]] | None = None

    def render(self, result: CycleResult, at: float) -> str:
        current = summarize(result)
        prev = self._previous
        self._previous = (at, current)
        cols = [c for c in COLUMNS if any(c.metric in row for row in current.values())]
        delta = {name for t in result.targets for name, mp in t.metrics.items() if mp.delta}
        header = ["TARGET", *[c.header for c in cols]]
        rows = []
        for name in sorted(current):
            row = current[name]
            cells = [name[:60]]
            for c in cols:
                cells.append(_fmt(self._cell(c, row, prev, name, at, c.metric in delta)))
            rows.append(cells)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        if not rows:
            lines.append("(no targets found)")
        return "\n".join(lines)

    @staticmethod
    def _cell(
        c: Column,
        row: Mapping[str, tuple[float, float]],
        prev: tuple[float, dict[str, dict[str, tuple[float, float]]]] | None,
        name: str,
        at: float,
        delta: bool,
    ) -> float | None:
        if c.metric not in row:
            return None
        total, count = row[c.metric]
        if c.kind == "value":
            return total * c.scale
        if delta:  # the points count the interval since the previous cycle
            if c.kind == "mean":
                return total / count * c.scale if count else None
            return total / (at - prev[0]) * c.scale if prev is not None and at > prev[0] else None
        old = prev[1].get(name, {}).get(c.metric) if prev else None
        if c.kind == "mean":
            if old is not None and count > old[1]:
                return (total - old[0]) / (count - old[1]) * c.scale
            return total / count * c.scale if count else None
        if old is None or prev is None or at <= prev[0]:
            # first cycle: the cumulative total, except for a scaled rate (a percentage), which needs two
            return None if prev is not None or c.scale != 1.0 else total
        return max(0.0, total - old[0]) / (at - prev[0]) * c.scale

    def deliver(self, result: CycleResult, deadline_s: float, cancel: threading.Event | None = None) -> bool:
        """CycleSink: print a table of this cycle."""
        self._out(self.render(result, time.monotonic()) + "\n")
        return True

    def close(self) -> None:
        pass
