"""One full collection+export cycle for N pods x M points, to a real OTLP gRPC receiver on loopback.

Usage: .venv/bin/python bench/export_cycle.py [--points 55] [--cycles 20] [--pods 10,110,250]
Prints, per N: median wall and CPU ms per cycle, split into collect (pipeline + encode into protobuf) and
export (serialize + gzip + gRPC), µs per point, and gzipped bytes per cycle.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc is imported: no GOAWAY chatter

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpod_otel.collector import Collector, CollectorSnapshot, HistogramPoint, InstrumentKind, InstrumentSpec
from kpod_otel.export.exporter import OtlpExporter
from kpod_otel.export.otlp_settings import settings_from_env
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.export.resources import agent_resource_attributes
from kpod_otel.model import ContainerTarget, Target
from kpod_otel.selfmetrics import AgentStats, SelfMetricsCollector
from tests.fakes.otlp import ByteCountingProxy, OtlpReceiver

BOUNDS = tuple(float(2**k) / 1e6 for k in range(0, 27))  # log2 microsecond slots, in seconds


class SyntheticCollector(Collector):
    """`points` points per pod over 3 containers: counters with container attributes, 2 histograms."""

    name = "synthetic"

    def __init__(self, points: int) -> None:
        self._counters = max(1, (points - 6) // 3)
        self._cycle = 0

    def instruments(self) -> Sequence[InstrumentSpec]:
        specs = [InstrumentSpec(f"bench.counter.{i}", InstrumentKind.COUNTER, "By", "") for i in range(self._counters)]
        specs += [InstrumentSpec(f"bench.hist.{i}", InstrumentKind.HISTOGRAM, "s", "") for i in range(2)]
        return specs

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        self._cycle += 1
        snap = CollectorSnapshot()
        for t in targets:
            for c in t.containers:
                attrs = c.attributes()
                for i in range(self._counters):
                    snap.add(t.key, f"bench.counter.{i}", 1_000_000 * i + self._cycle * 4096, attrs)
                for i in range(2):
                    counts = tuple(self._cycle * (k % 5) for k in range(len(BOUNDS) + 1))
                    snap.add_histogram(t.key, HistogramPoint(f"bench.hist.{i}", attrs, BOUNDS, counts,
                                                             sum=0.25 * self._cycle, count=sum(counts)))
        return snap


def targets(n: int) -> list[Target]:
    out = []
    for i in range(n):
        uid = f"5f0c{i:04x}-1b2c-4d5e-8f90-{i:012x}"
        out.append(Target(
            key=uid,
            resource={"k8s.pod.uid": uid, "k8s.pod.name": f"web-7d9f8c6b5-{i:05d}", "k8s.namespace.name": "shop",
                      "k8s.node.name": "node-a"},
            containers=tuple(ContainerTarget(f"container-{j}", os.urandom(32).hex(), "") for j in range(3)),
        ))
    return out


def _serve(port_out: Any, bytes_out: Any, stop: Any) -> None:
    """The receiver and the byte-counting proxy live in a child process: their CPU is not the agent's."""
    receiver = OtlpReceiver().start("grpc")
    proxy = ByteCountingProxy(receiver.port)
    port_out.value = proxy.port
    while not stop.wait(0.02):
        bytes_out.value = proxy.client_bytes
    proxy.close()
    receiver.stop()


def bench(n: int, points: int, cycles: int) -> dict[str, float]:
    ctx = mp.get_context("fork")
    port, wire, stop = ctx.Value("i", 0), ctx.Value("q", 0), ctx.Event()
    child = ctx.Process(target=_serve, args=(port, wire, stop), daemon=True)
    child.start()
    while port.value == 0:
        time.sleep(0.01)
    try:
        stats = AgentStats()
        pipeline = MetricsPipeline([SyntheticCollector(points), SelfMetricsCollector(stats)],
                                   agent_resource_attributes("node-a"), stats)
        exporter = OtlpExporter(settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port.value}"}),
                                stats)
        tg = targets(n)
        rows = []
        for c in range(cycles + 2):
            time.sleep(0.1)  # let the proxy publish its count
            before = wire.value
            w0, c0 = time.perf_counter(), time.process_time()
            result = pipeline.collect(tg)
            c1 = time.process_time()
            ok = exporter.export_encoded(result.resources).ok  # what the agent's deliver() sends
            w2, c2 = time.perf_counter(), time.process_time()
            time.sleep(0.1)
            if c >= 2:  # warm-up cycles excluded
                rows.append((w2 - w0, c2 - c0, c1 - c0, c2 - c1, result.points, wire.value - before, ok))
        med = {k: statistics.median(r[i] for r in rows) for i, k in enumerate(
            ["wall", "cpu", "cpu_collect", "cpu_export", "points", "wire_bytes"])}
        assert all(r[6] for r in rows)
        return med
    finally:
        stop.set()
        child.join(5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=55, help="data points per pod")
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--pods", default="10,110,250")
    args = ap.parse_args()
    print(f"{'pods':>5} {'points':>7} {'wall ms':>8} {'cpu ms':>7} {'collect':>8} {'export':>7} "
          f"{'us/pt':>6} {'ms/pod':>7} {'gzip KB':>8}")
    for n in (int(x) for x in args.pods.split(",")):
        m = bench(n, args.points, args.cycles)
        print(f"{n:>5} {int(m['points']):>7} {m['wall'] * 1e3:>8.1f} {m['cpu'] * 1e3:>7.1f} "
              f"{m['cpu_collect'] * 1e3:>8.1f} {m['cpu_export'] * 1e3:>7.1f} {m['cpu'] * 1e6 / m['points']:>6.1f} "
              f"{m['cpu'] * 1e3 / n:>7.2f} {m['wire_bytes'] / 1024:>8.1f}")


if __name__ == "__main__":
    main()
