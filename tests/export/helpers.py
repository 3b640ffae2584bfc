"""Test collectors and payload readers shared by the export tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from kpod_otel.collector import Collector, CollectorSnapshot, HistogramPoint, InstrumentKind, InstrumentSpec
from kpod_otel.model import ContainerTarget, Target

# The scripted pods "were created" an hour before the tests run: their counters count from then.
POD_CREATED_NS = time.time_ns() - 3600 * 1_000_000_000


def pod_target(i: int, containers: int = 1) -> Target:
    uid = f"00000000-0000-4000-8000-{i:012d}"
    return Target(
        created_ns=POD_CREATED_NS,
        key=uid,
        resource={"k8s.pod.uid": uid, "k8s.pod.name": f"pod-{i}", "k8s.namespace.name": "team-a",
                  "k8s.node.name": "node-1"},
        containers=tuple(ContainerTarget(f"c{j}", f"{i:08x}{j:056x}", f"p{i}/c{j}") for j in range(containers)),
    )


class ScriptedCollector(Collector):
    """Emits values the test chose, per target and container: the truth is the script itself."""

    name = "scripted"

    def __init__(self) -> None:
        self.cycle = 0

    def instruments(self) -> Sequence[InstrumentSpec]:
        return (
            InstrumentSpec("test.bytes", InstrumentKind.COUNTER, "By", "bytes"),
            InstrumentSpec("test.level", InstrumentKind.GAUGE, "1", "level"),
            InstrumentSpec("test.balance", InstrumentKind.UP_DOWN_COUNTER, "{item}", "balance"),
            InstrumentSpec("test.latency", InstrumentKind.HISTOGRAM, "s", "latency"),
        )

    @staticmethod
    def bytes_for(target: Target, container: int, cycle: int) -> int:
        return (int(target.key[-6:]) + 1) * 1000 + container * 10 + cycle

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        self.cycle += 1
        snap = CollectorSnapshot()
        for t in targets:
            for j, c in enumerate(t.containers):
                snap.add(t.key, "test.bytes", self.bytes_for(t, j, self.cycle), c.attributes())
            snap.add(t.key, "test.level", 0.5, {})
            snap.add(t.key, "test.balance", -3, {})
            snap.add_histogram(t.key, HistogramPoint(
                "test.latency", {}, (0.001, 0.01), (1, 2, 3), sum=0.5, count=6))
        return snap


def attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def by_resource(requests: Sequence[ExportMetricsServiceRequest]) -> dict[str, dict[str, Any]]:
    """pod uid (or service.name) -> {"resource": attrs, metric name: Metric}."""
    out: dict[str, dict[str, Any]] = {}
    for req in requests:
        for rm in req.resource_metrics:
            res = attrs(rm.resource.attributes)
            key = res.get("k8s.pod.uid") or res.get("service.name")
            entry = out.setdefault(key, {"resource": res})
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    entry[m.name] = m
    return out
