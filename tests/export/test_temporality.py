"""OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE and OTEL_METRICS_EXPORTER: what a real receiver gets.

The truth of the series tests is the script each collector follows (the kernel-backed proofs are in
tests/cgroup/test_delta_disk_real.py and tests/bpf/test_delta_histograms.py); the truth of the mapping
per instrument kind is the specification's table, restated here independently of the code."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from kpod_otel.catalog import CATALOG, METRICS, InstrumentKind
from kpod_otel.collector import Collector, CollectorSnapshot, HistogramPoint
from kpod_otel.export.exporter import OtlpExporter
from kpod_otel.export.otlp_settings import settings_from_env
from kpod_otel.export.pipeline import CycleResult, MetricsPipeline
from kpod_otel.export.resources import agent_resource_attributes
from kpod_otel.export.selection import MetricsExporter, exporters_from_env
from kpod_otel.export.temporality import TemporalityPreference, delta_metrics, preference_from_env
from kpod_otel.model import Target
from kpod_otel.points import NO_RECORDED_VALUE
from kpod_otel.selfmetrics import AgentStats, SelfMetricsCollector
from tests.export.helpers import pod_target
from tests.export.test_series import BYTES, LATENCY, Scripted
from tests.fakes.otlp import OtlpReceiver
from tests.series_rules import SeriesChecker
from tests.test_agent_run import agent_env, write_config

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
P = TemporalityPreference

# --- the settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "want"), [
    ("", P.CUMULATIVE), ("  ", P.CUMULATIVE), ("cumulative", P.CUMULATIVE), ("Delta", P.DELTA),
    ("DELTA", P.DELTA), ("LowMemory", P.LOW_MEMORY), (" lowmemory ", P.LOW_MEMORY)])
def test_temporality_preference_values(raw: str, want: TemporalityPreference) -> None:
    assert preference_from_env({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": raw}) is want
    assert preference_from_env({}) is P.CUMULATIVE


@pytest.mark.parametrize("raw", ["low_memory", "deltas", "0"])
def test_unknown_temporality_preference_names_the_allowed_values(raw: str) -> None:
    with pytest.raises(ValueError, match=re.escape("allowed: cumulative | delta | lowmemory")) as exc:
        preference_from_env({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": raw})
    assert "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE" in str(exc.value) and repr(raw) in str(exc.value)


E = MetricsExporter


@pytest.mark.parametrize(("raw", "want"), [
    ("", {E.OTLP}), ("otlp", {E.OTLP}), ("CONSOLE", {E.CONSOLE}), ("none", set()), (" None ", set()),
    ("otlp,console", {E.OTLP, E.CONSOLE}), ("console, otlp, console", {E.OTLP, E.CONSOLE})])
def test_metrics_exporter_values(raw: str, want: set[MetricsExporter]) -> None:
    assert exporters_from_env({"OTEL_METRICS_EXPORTER": raw}) == want


@pytest.mark.parametrize("raw", ["prometheus", "logging", "otlp/stdout", "none,otlp", "otlp,", "zipkin"])
def test_unsupported_metrics_exporter_names_the_supported_ones(raw: str) -> None:
    with pytest.raises(ValueError, match=r"OTEL_METRICS_EXPORTER: .*allowed: otlp \| console \| none"):
        exporters_from_env({"OTEL_METRICS_EXPORTER": raw})


# The specification's table (metrics/sdk_exporters/otlp.md), restated: preference -> instrument kind ->
# delta? "sync counter" is a Counter the agent increments, "async counter" a total read from the kernel.
SPEC_TABLE = {
    P.CUMULATIVE: {"sync counter": False, "async counter": False, "histogram": False, "updown": False},
    P.DELTA: {"sync counter": True, "async counter": True, "histogram": True, "updown": False},
    P.LOW_MEMORY: {"sync counter": True, "async counter": False, "histogram": True, "updown": False},
}
# Which kind each of our counters is: the ones the agent increments itself, by name.
AGENT_INCREMENTED = {"kpod.agent.cycles", "kpod.agent.errors", "kpod.agent.exports",
                     "kpod.agent.discovery.mode.switches"}


def spec_kind(name: str) -> str | None:
    kind = CATALOG[name].kind
    if kind is InstrumentKind.GAUGE:
        return None
    if kind is InstrumentKind.HISTOGRAM:
        return "histogram"
    if kind is InstrumentKind.UP_DOWN_COUNTER:
        return "updown"
    return "sync counter" if name in AGENT_INCREMENTED else "async counter"


@pytest.mark.parametrize("preference", list(P))
def test_every_catalog_metric_gets_the_temporality_of_its_instrument_kind(preference: TemporalityPreference) -> None:
    chosen = delta_metrics(preference, [m.spec for m in METRICS])
    for m in METRICS:
        kind = spec_kind(m.name)
        assert (m.name in chosen) == (kind is not None and SPEC_TABLE[preference][kind]), (preference, m.name)


# --- series through the pipeline, the exporter and a real receiver ------------------------------------


class Run:
    """A pipeline with a temporality preference, exporting to a real receiver; every request goes through
    the series checker."""

    def __init__(self, receiver: OtlpReceiver, collector: Collector, preference: TemporalityPreference) -> None:
        self.stats = AgentStats()
        self.pipeline = MetricsPipeline([collector, SelfMetricsCollector(self.stats)],
                                        agent_resource_attributes("node-1"), self.stats, temporality=preference)
        self.exporter = OtlpExporter(settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}),
                                     self.stats)
        self.receiver = receiver
        self.checker = SeriesChecker()

    def cycle(self, targets: Sequence[Target]) -> ExportMetricsServiceRequest:
        result: CycleResult = self.pipeline.collect(targets)
        n = len(self.receiver.received)
        assert self.exporter.export_encoded(result.resources).ok
        request = self.receiver.wait_for(n + 1)[-1].request
        self.checker.feed(request)
        assert not self.checker.violations, self.checker.violations
        time.sleep(0.001)  # distinct cycle times
        return request


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start("grpc")
    yield r
    r.stop()


def metric_of(request: ExportMetricsServiceRequest, name: str, pod: str | None = None) -> Any:
    for rm in request.resource_metrics:
        uid = {kv.key: kv.value.string_value for kv in rm.resource.attributes}.get("k8s.pod.uid")
        if pod is not None and uid != pod:
            continue
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    return m
    return None


def sum_points(request: ExportMetricsServiceRequest, pod: Target) -> list[tuple[int, int, int, int]]:
    """(start, time, value, flags) of the BYTES points of `pod`, as received; [] when absent."""
    m = metric_of(request, BYTES, pod.key)
    if m is None:
        return []
    assert m.sum.aggregation_temporality == DELTA and m.sum.is_monotonic
    return [(dp.start_time_unix_nano, dp.time_unix_nano, dp.as_int, dp.flags) for dp in m.sum.data_points]


def test_delta_sums_are_contiguous_and_add_up_to_the_change_of_the_counter(receiver: OtlpReceiver) -> None:
    # Cycle 4: the source was re-created (a reset); cycle 7: the series is gone (end of series).
    values = {1: 1000, 2: 1500, 3: 1500, 4: 20, 5: 30, 6: 95}

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        if c in values:
            s.add(t.key, BYTES, values[c], {})

    collector = Scripted(script)
    run = Run(receiver, collector, P.DELTA)
    collector.origin = time.time_ns()  # the pod was created after the agent started
    pod = pod_target(1)
    got = [sum_points(run.cycle([pod]), pod) for _ in range(7)]
    assert all(len(points) == 1 for points in got)
    points = [p[0] for p in got]
    deltas = [p[2] for p in points]
    assert deltas[:6] == [1000, 500, 0, 20, 10, 65]  # the reset: the new source's 20, never -1480
    # contiguous: each point starts when the previous one ended; the first at the source's origin
    assert all(b[0] == a[1] for a, b in itertools.pairwise(points))
    assert points[0][0] == collector.origin < points[0][1]
    # the deltas add up to the counter's change: before the reset up to 1500, after it 95
    assert sum(deltas[:3]) == 1500 and sum(deltas[3:6]) == 95
    assert points[6][3] == NO_RECORDED_VALUE and run.checker.flagged == 1


def test_delta_never_counts_from_before_the_agent_started(receiver: OtlpReceiver) -> None:
    # The pod (and its counter) existed an hour before this agent: its predecessor may have sent those
    # counts already. Cumulative restates the total under the pod's start; delta starts with a baseline.
    values = {1: 4 << 20, 2: (4 << 20) + 100}
    script = Scripted(lambda c, t, s: s.add(t.key, BYTES, values[c], {}), origin=time.time_ns() - 3600 * 10**9)
    run = Run(receiver, script, P.DELTA)
    pod = pod_target(1)
    first, second = sum_points(run.cycle([pod]), pod), sum_points(run.cycle([pod]), pod)
    assert first[0][2] == 0 and first[0][0] == first[0][1]  # a baseline: nothing, over no time
    assert second == [(first[0][1], second[0][1], 100, 0)]


def test_histogram_deltas_add_up_to_the_cumulative_buckets(receiver: OtlpReceiver) -> None:
    # Cumulative bucket counts and sums of the source; cycle 4 resets it.
    buckets = {1: (1, 2, 0), 2: (1, 3, 1), 3: (4, 3, 1), 4: (0, 1, 0), 5: (2, 1, 3)}
    sums = {1: 0.0105, 2: 0.0355, 3: 0.037, 4: 0.005, 5: 0.0660}

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        s.add_histogram(t.key, HistogramPoint(LATENCY, {}, (0.001, 0.01), buckets[c], sum=sums[c], count=0))

    pod = pod_target(1)
    cumulative_receiver = OtlpReceiver().start("grpc")
    try:
        collectors = Scripted(script), Scripted(script)
        delta_run = Run(receiver, collectors[0], P.LOW_MEMORY)  # histograms: delta
        cumulative_run = Run(cumulative_receiver, collectors[1], P.CUMULATIVE)
        origin = time.time_ns()  # the pod was created after both agents started
        for c in collectors:
            c.origin = origin
        running, running_sum, previous_time = [0, 0, 0], 0.0, origin
        for cycle in range(1, 6):
            d = metric_of(delta_run.cycle([pod]), LATENCY, pod.key).histogram
            c = metric_of(cumulative_run.cycle([pod]), LATENCY, pod.key).histogram
            assert d.aggregation_temporality == DELTA and c.aggregation_temporality == CUMULATIVE
            (dp,), (cp,) = d.data_points, c.data_points
            assert dp.count == sum(dp.bucket_counts)
            assert dp.start_time_unix_nano == previous_time  # contiguous, through the reset too
            if cycle == 4:  # the reset: the cumulative series starts again, and so does the running total
                assert cp.start_time_unix_nano > origin
                running, running_sum = [0, 0, 0], 0.0
            running = [r + b for r, b in zip(running, dp.bucket_counts, strict=True)]
            running_sum += dp.sum
            assert running == list(cp.bucket_counts) == list(buckets[cycle]), cycle
            assert running_sum == pytest.approx(cp.sum, abs=1e-12)
            previous_time = dp.time_unix_nano
    finally:
        cumulative_receiver.stop()


def test_the_receiver_gets_the_temporality_of_each_instrument_kind(receiver: OtlpReceiver) -> None:
    pod = pod_target(1)

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        s.add(t.key, BYTES, 10 * c, {})
        s.add_histogram(t.key, HistogramPoint(LATENCY, {}, (0.001,), (c, 0), sum=0.0005 * c, count=c))

    got: dict[TemporalityPreference, dict[str, tuple[int, list[int]]]] = {}
    for preference in P:
        run = Run(receiver, Scripted(script, origin=time.time_ns()), preference)
        for _ in range(2):
            run.stats.add("kpod.agent.cycles")  # what the agent loop does every cycle
            request = run.cycle([pod])
        b, h = metric_of(request, BYTES, pod.key).sum, metric_of(request, LATENCY, pod.key).histogram
        cycles = metric_of(request, "kpod.agent.cycles").sum
        got[preference] = {
            BYTES: (b.aggregation_temporality, [dp.as_int for dp in b.data_points]),
            LATENCY: (h.aggregation_temporality, [dp.count for dp in h.data_points]),
            "kpod.agent.cycles": (cycles.aggregation_temporality, [dp.as_int for dp in cycles.data_points]),
        }
    cumulative, delta = (CUMULATIVE, [20]), (DELTA, [10])
    assert got[P.CUMULATIVE] == {BYTES: cumulative, LATENCY: (CUMULATIVE, [2]), "kpod.agent.cycles": (CUMULATIVE, [2])}
    assert got[P.DELTA] == {BYTES: delta, LATENCY: (DELTA, [1]), "kpod.agent.cycles": (DELTA, [1])}
    # lowmemory: the counter read from its source stays cumulative; the histogram and the counter the
    # agent increments itself go delta
    assert got[P.LOW_MEMORY] == {BYTES: cumulative, LATENCY: (DELTA, [1]), "kpod.agent.cycles": (DELTA, [1])}


# --- `kpod-otel run` as a user runs it -------------------------------------------------------------


def run_agent(tmp_path: Path, receiver: OtlpReceiver, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kpod_otel", "run", "--once", "--config", str(write_config(tmp_path))],
        env={**agent_env(receiver, "grpc"), **env}, capture_output=True, text=True, timeout=120)


def test_console_prints_otlp_json_and_sends_nothing(tmp_path: Path, receiver: OtlpReceiver) -> None:
    proc = run_agent(tmp_path, receiver, OTEL_METRICS_EXPORTER="console",
                     OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="delta")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1  # one cycle, one line; the logs went to stderr
    request = Parse(lines[0], ExportMetricsServiceRequest())
    json.loads(lines[0])
    cycles = metric_of(request, "kpod.agent.cycles").sum
    assert cycles.aggregation_temporality == DELTA and [dp.as_int for dp in cycles.data_points] == [1]
    time.sleep(0.5)
    assert receiver.arrivals == 0


def test_none_collects_and_sends_nothing(tmp_path: Path, receiver: OtlpReceiver) -> None:
    proc = run_agent(tmp_path, receiver, OTEL_METRICS_EXPORTER="none")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "OTEL_METRICS_EXPORTER=none" in proc.stderr
    time.sleep(0.5)
    assert receiver.arrivals == 0


def test_otlp_and_console_together(tmp_path: Path, receiver: OtlpReceiver) -> None:
    proc = run_agent(tmp_path, receiver, OTEL_METRICS_EXPORTER="otlp,console")
    assert proc.returncode == 0, proc.stderr
    printed = Parse(proc.stdout.strip(), ExportMetricsServiceRequest())
    assert printed == receiver.wait_for(1)[0].request


@pytest.mark.parametrize(("var", "value", "allowed"), [
    ("OTEL_METRICS_EXPORTER", "prometheus", "otlp | console | none"),
    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "deltas", "cumulative | delta | lowmemory")])
def test_an_unsupported_value_exits_2_naming_the_supported_ones(tmp_path: Path, receiver: OtlpReceiver,
                                                                var: str, value: str, allowed: str) -> None:
    proc = run_agent(tmp_path, receiver, **{var: value})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and var in lines[0] and repr(value) in lines[0] and allowed in lines[0], lines
    assert receiver.arrivals == 0


@pytest.mark.parametrize("preference", [P.CUMULATIVE, P.DELTA])
def test_state_stays_proportional_to_the_live_series_under_churn(receiver: OtlpReceiver,
                                                                 preference: TemporalityPreference) -> None:
    # 2,000 pod lifecycles, 100 per cycle, as discovery delivers them: a deleted pod is measured one last
    # cycle (its cgroups are gone: no values, so every series of it ends on its own), then leaves.
    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        if t.key not in deleted:
            s.add(t.key, BYTES, 10 * c, {})
            s.add_histogram(t.key, HistogramPoint(LATENCY, {}, (0.001,), (c, 0), sum=0.0005 * c, count=c))

    deleted: set[str] = set()
    collector = Scripted(script)
    run = Run(receiver, collector, preference)
    collector.origin = time.time_ns()
    live = [pod_target(i) for i in range(110)]
    next_id = 110
    for _ in range(20):
        run.cycle(live)
        deleted = {t.key for t in live[:100]}
        run.cycle(live)  # the deleted pods' last cycle: their series end
        live = live[100:] + [pod_target(next_id + k) for k in range(100)]
        next_id += 100
        receiver.clear()
    run.cycle(live)
    assert next_id - 110 == 2000
    assert run.pipeline.tracked_targets == 110
    assert run.pipeline.tracked_series == 110 * 2 + len(run.stats.items())  # 2 per pod, and the agent's
    assert run.pipeline.remembered_series == 0  # the ended pods are remembered by their key only
    assert run.checker.flagged == 2000 * 2
