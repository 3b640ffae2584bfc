"""Delta temporality on real eBPF data: a workload in its own cgroup sleeps and wakes in rounds between
cycles. One pipeline exports DELTA, a second one CUMULATIVE from the very same kernel reads; what two
real receivers get agrees: the run-queue histogram's delta buckets add up to the cumulative buckets'
change, and the delta context switches to what /proc counted for the workload's threads."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentSpec
from kpod_otel.collectors.cpu_sched import CONTEXT_SWITCHES, RUNQ_LATENCY, CpuSchedCollector
from kpod_otel.export.exporter import OtlpExporter
from kpod_otel.export.otlp_settings import settings_from_env
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.export.temporality import TemporalityPreference
from kpod_otel.model import Target
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import CgroupFactory, Workload, ctx_switches_of, target_for
from tests.bpf.test_cpu_sched import SLEEPER
from tests.fakes.otlp import OtlpReceiver
from tests.series_rules import SeriesChecker

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


class Tee(Collector):
    """The real collector, read once per cycle; `last` is the snapshot for the second pipeline."""

    def __init__(self, real: CpuSchedCollector) -> None:
        self.real = real
        self.name = real.name
        self.last = CollectorSnapshot()

    def instruments(self) -> Sequence[InstrumentSpec]:
        return self.real.instruments()

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        self.last = self.real.collect(targets)
        return self.last

    def origin_ns(self, target: Target, metric: str) -> int | None:
        return self.real.origin_ns(target, metric)


class Replay(Tee):
    def __init__(self, tee: Tee) -> None:
        super().__init__(tee.real)
        self.tee = tee

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        return self.tee.last


class Side:
    def __init__(self, collector: Collector, preference: TemporalityPreference) -> None:
        self.stats = AgentStats()
        self.pipeline = MetricsPipeline([collector], {}, self.stats, temporality=preference)
        self.receiver = OtlpReceiver().start("grpc")
        self.exporter = OtlpExporter(settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.endpoint}),
                                     self.stats)
        self.checker = SeriesChecker()

    def cycle(self, targets: Sequence[Target]) -> dict[str, Any]:
        sent = len(self.receiver.received)
        assert self.exporter.export_encoded(self.pipeline.collect(targets).resources).ok
        request = self.receiver.wait_for(sent + 1)[-1].request
        self.checker.feed(request)
        assert not self.checker.violations, self.checker.violations
        return {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def stop(self) -> None:
        self.receiver.stop()


def test_delta_runqueue_histogram_and_switches_add_up(cpu_collector: CpuSchedCollector,
                                                      cgroups: CgroupFactory) -> None:
    cg = cgroups.make("delta")
    target = target_for("delta", cg)
    workload = Workload(SLEEPER, "150")
    tee = Tee(cpu_collector)
    delta, cumulative = Side(tee, TemporalityPreference.DELTA), Side(Replay(tee), TemporalityPreference.CUMULATIVE)
    try:
        cg.add(workload.pid)
        proc_switches, cycles = [], []
        for _ in range(4):  # (the first round creates the cgroup's map entries)
            workload.run()
            proc_switches.append(ctx_switches_of(workload.pid))
            cycles.append((delta.cycle([target]), cumulative.cycle([target])))
    finally:
        workload.stop()
        delta.stop()
        cumulative.stop()

    running: list[int] | None = None
    first_buckets: list[int] | None = None
    switches = 0
    previous_time = 0
    for i, (d, c) in enumerate(cycles):
        dh, ch = d[RUNQ_LATENCY].histogram, c[RUNQ_LATENCY].histogram
        assert dh.aggregation_temporality == DELTA and ch.aggregation_temporality == CUMULATIVE
        (dp,), (cp,) = dh.data_points, ch.data_points
        assert dp.count == sum(dp.bucket_counts) and cp.count == sum(cp.bucket_counts)
        if i == 0:  # the program was loaded before this "agent" started: a baseline, then the deltas
            assert dp.count == 0 and dp.start_time_unix_nano == dp.time_unix_nano
            first_buckets, running = list(cp.bucket_counts), [0] * len(cp.bucket_counts)
        else:
            assert dp.start_time_unix_nano == previous_time  # contiguous
            assert cp.start_time_unix_nano == cycles[0][1][RUNQ_LATENCY].histogram.data_points[0].start_time_unix_nano
        assert running is not None and first_buckets is not None
        running = [r + b for r, b in zip(running, dp.bucket_counts, strict=True)]
        assert running == [b - f for b, f in zip(cp.bucket_counts, first_buckets, strict=True)], i
        previous_time = dp.time_unix_nano
        sw = d[CONTEXT_SWITCHES].sum
        assert sw.aggregation_temporality == DELTA
        switches += sum(p.as_int for p in sw.data_points) if i else 0
    assert sum(running or ()) > 3 * 3 * 150  # the workload's wakeups were measured
    # the delta context switches add up to what the kernel counted for the workload's threads
    assert switches == proc_switches[-1] - proc_switches[0]
    assert [b - a for a, b in itertools.pairwise(proc_switches)] == [
        sum(p.as_int for p in d[CONTEXT_SWITCHES].sum.data_points) for d, _ in cycles[1:]]
