"""A terminal table of one cycle's data: one row per target (pod or local workload)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from kpod_otel.export.pipeline import CycleResult


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    metric: str
    kind: str  # "rate": per-second rate of a cumulative sum; "value": current value; "mean": histogram mean
    scale: float = 1.0  # multiply before display (e.g. s -> ms)


COLUMNS: tuple[Column, ...] = (
    Column("CPU runq ms", "kpod.cpu.runqueue.latency", "mean", 1000.0),
    Column("ctxsw/s", "kpod.cpu.context.switches", "rate"),
    Column("syscalls/s", "kpod.syscall.count", "rate"),
    Column("tcp tx B/s", "kpod.net.tcp.bytes.sent", "rate"),
    Column("tcp rx B/s", "kpod.net.tcp.bytes.received", "rate"),
    Column("retrans", "kpod.net.tcp.retransmits", "value"),
    Column("if rx B/s", "kpod.net.iface.rx.bytes", "rate"),
    Column("if tx B/s", "kpod.net.iface.tx.bytes", "rate"),
    Column("disk rd B/s", "kpod.disk.read.bytes", "rate"),
    Column("disk wr B/s", "kpod.disk.written.bytes", "rate"),
    Column("majflt", "kpod.mem.major.page.faults", "value"),
    Column("oom", "kpod.mem.oom.kills", "value"),
    Column("fs used", "kpod.fs.usage.bytes", "value"),
)


def _scalar(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    return str(getattr(v, kind)) if kind else ""


def _name(resource: Mapping[str, str]) -> str:
    if "k8s.pod.name" in resource:
        return f"{resource.get('k8s.namespace.name', '?')}/{resource['k8s.pod.name']}"
    if "k8s.pod.uid" in resource:
        return f"pod {resource['k8s.pod.uid']}"
    return resource.get("kpod.workload.cgroup") or resource.get("service.name", "?")


def summarize(request: ExportMetricsServiceRequest) -> dict[str, dict[str, tuple[float, float]]]:
    """target name -> metric -> (sum of values or histogram sums, histogram counts)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for rm in request.resource_metrics:
        res = {kv.key: _scalar(kv.value) for kv in rm.resource.attributes}
        if res.get("service.name") == "kpod-otel" and "k8s.pod.uid" not in res:
            continue  # the agent's own resource
        row = out.setdefault(_name(res), {})
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                total, count = row.get(m.name, (0.0, 0.0))
                if kind == "histogram":
                    for hp in m.histogram.data_points:
                        total, count = total + hp.sum, count + hp.count
                elif kind in ("sum", "gauge"):
                    for dp in getattr(m, kind).data_points:
                        total += dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                row[m.name] = (total, count)
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

    def render(self, request: ExportMetricsServiceRequest, at: float) -> str:
        current = summarize(request)
        prev = self._previous
        self._previous = (at, current)
        cols = [c for c in COLUMNS if any(c.metric in row for row in current.values())]
        header = ["TARGET", *[c.header for c in cols]]
        rows = []
        for name in sorted(current):
            row = current[name]
            cells = [name[:60]]
            for c in cols:
                cells.append(_fmt(self._cell(c, row, prev, name, at)))
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
    ) -> float | None:
        if c.metric not in row:
            return None
        total, count = row[c.metric]
        if c.kind == "value":
            return total * c.scale
        old = prev[1].get(name, {}).get(c.metric) if prev else None
        if c.kind == "mean":
            if old is not None and count > old[1]:
                return (total - old[0]) / (count - old[1]) * c.scale
            return total / count * c.scale if count else None
        if old is None or prev is None or at <= prev[0]:
            return None if prev is not None else total
        return max(0.0, total - old[0]) / (at - prev[0])

    def deliver(self, result: CycleResult, deadline_s: float, cancel: threading.Event | None = None) -> bool:
        """CycleSink: print a table of this cycle."""
        self._out(self.render(result.request, time.monotonic()) + "\n")
        return True

    def close(self) -> None:
        pass
