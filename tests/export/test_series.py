"""Series a backend can trust, through the pipeline, the encoder, the real exporter and a real receiver:
start times from the source, baselines when it is unknown, resets, end of series, first-event zeros,
and bad values that cost only their own target. The truth is the script each test gives its collector."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from kpod_otel.collector import Collector, CollectorSnapshot, HistogramPoint, InstrumentKind, InstrumentSpec
from kpod_otel.export.exporter import OtlpExporter
from kpod_otel.export.otlp_settings import settings_from_env
from kpod_otel.export.pipeline import CycleResult, MetricsPipeline
from kpod_otel.export.resources import agent_resource_attributes
from kpod_otel.model import ContainerTarget, Target
from kpod_otel.points import NO_RECORDED_VALUE
from kpod_otel.selfmetrics import AgentStats, SelfMetricsCollector
from tests.export.helpers import pod_target
from tests.fakes.otlp import OtlpReceiver
from tests.series_rules import SeriesChecker

RETRANSMITS = "kpod.net.tcp.retransmits"  # a first-event counter of the catalog
BYTES = "test.bytes"
LATENCY = "test.latency"

Script = Callable[[int, Target, CollectorSnapshot], None]


class Scripted(Collector):
    """Values from a script (cycle number, target, snapshot); `origin` and `zeros` as the test says."""

    name = "scripted"

    def __init__(self, script: Script, origin: int | None = None, zeros: bool = False) -> None:
        self.script = script
        self.origin = origin
        self.zeros = zeros
        self.cycle = 0
        self.fail = False

    def instruments(self) -> Sequence[InstrumentSpec]:
        return (InstrumentSpec(BYTES, InstrumentKind.COUNTER, "By", "bytes"),
                InstrumentSpec(LATENCY, InstrumentKind.HISTOGRAM, "s", "latency"),
                InstrumentSpec(RETRANSMITS, InstrumentKind.COUNTER, "{segment}", "TCP segments retransmitted"))

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        self.cycle += 1
        if self.fail:
            raise RuntimeError("scripted failure")
        snap = CollectorSnapshot()
        for t in targets:
            self.script(self.cycle, t, snap)
        return snap

    def origin_ns(self, target: Target, metric: str) -> int | None:
        return self.origin

    def first_event_zeros(self, container: ContainerTarget, metric: str) -> bool:
        return self.zeros


class Run:
    """A pipeline exporting to a real receiver; every request goes through the series checker."""

    def __init__(self, receiver: OtlpReceiver, collector: Collector) -> None:
        self.stats = AgentStats()
        self.pipeline = MetricsPipeline([collector, SelfMetricsCollector(self.stats)],
                                        agent_resource_attributes("node-1"), self.stats)
        self.exporter = OtlpExporter(settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}),
                                     self.stats)
        self.receiver = receiver
        self.checker = SeriesChecker()
        self.results: list[CycleResult] = []

    def cycle(self, targets: Sequence[Target]) -> CycleResult:
        result = self.pipeline.collect(targets)
        n = len(self.receiver.received)
        assert self.exporter.export_encoded(result.resources).ok
        self.checker.feed(self.receiver.wait_for(n + 1)[-1].request)
        assert not self.checker.violations, self.checker.violations
        self.results.append(result)
        time.sleep(0.001)  # distinct cycle times
        return result


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start("grpc")
    yield r
    r.stop()


def bytes_points(result: CycleResult, target: Target) -> list[tuple[int, int | float, int]]:
    t = result.target(target.key)
    assert t is not None
    return [(p.start_ns, p.value, p.flags) for p in t.numbers(BYTES)]


def test_known_origin_keeps_the_kernel_value_and_its_start(receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12
    values = {1: 4096, 2: 5000}
    run = Run(receiver, Scripted(lambda c, t, s: s.add(t.key, BYTES, values[c], {}), origin=created))
    pod = pod_target(1)
    first, second = run.cycle([pod]), run.cycle([pod])
    assert bytes_points(first, pod) == [(created, 4096, 0)]
    assert bytes_points(second, pod) == [(created, 5000, 0)]


def test_unknown_origin_reports_only_what_was_counted_after_the_first_observation(receiver: OtlpReceiver) -> None:
    # The kernel had counted 4 MiB before the agent looked: that must never appear as an increase.
    values = {1: 4 << 20, 2: (4 << 20) + 100, 3: (4 << 20) + 250}
    run = Run(receiver, Scripted(lambda c, t, s: s.add(t.key, BYTES, values[c], {}), origin=None))
    pod = pod_target(1)
    results = [run.cycle([pod]) for _ in range(3)]
    first_time = results[0].time_ns
    assert [bytes_points(r, pod) for r in results] == [[(first_time, 0, 0)], [(first_time, 100, 0)],
                                                       [(first_time, 250, 0)]]


def test_origin_in_the_future_is_treated_as_unknown(receiver: OtlpReceiver) -> None:
    run = Run(receiver, Scripted(lambda c, t, s: s.add(t.key, BYTES, 70, {}), origin=time.time_ns() + 10**12))
    pod = pod_target(1)
    result = run.cycle([pod])
    assert bytes_points(result, pod) == [(result.time_ns, 0, 0)]


def test_a_decrease_starts_a_new_series_at_the_previous_observation(receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12
    values = {1: 1000, 2: 1500, 3: 20, 4: 30}  # the source was re-created between cycles 2 and 3
    run = Run(receiver, Scripted(lambda c, t, s: s.add(t.key, BYTES, values[c], {}), origin=created))
    pod = pod_target(1)
    r = [run.cycle([pod]) for _ in range(4)]
    assert [bytes_points(x, pod) for x in r] == [
        [(created, 1000, 0)], [(created, 1500, 0)], [(r[1].time_ns, 20, 0)], [(r[1].time_ns, 30, 0)]]


def test_histogram_reset_and_count_from_the_buckets(receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12
    buckets = {1: (1, 2, 0), 2: (1, 3, 1), 3: (0, 1, 0)}
    sums = {1: 0.0105, 2: 0.0355, 3: 0.005}  # values of 0.5 ms, 5 ms and 20 ms

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        # `count` is deliberately wrong: the buckets are the truth
        s.add_histogram(t.key, HistogramPoint(LATENCY, {}, (0.001, 0.01), buckets[c], sum=sums[c], count=99))

    run = Run(receiver, Scripted(script, origin=created))
    pod = pod_target(1)
    r = [run.cycle([pod]) for _ in range(3)]
    points = [x.target(pod.key).histograms(LATENCY)[0] for x in r]  # type: ignore[union-attr]
    assert [(p.start_ns, p.bucket_counts, p.count) for p in points] == [
        (created, (1, 2, 0), 3), (created, (1, 3, 1), 5), (r[1].time_ns, (0, 1, 0), 1)]


def test_a_series_that_goes_ends_once_with_no_recorded_value(receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        for j, container in enumerate(t.containers):
            if not (j == 1 and c >= 3):  # container c1's file cannot be read from cycle 3 on
                s.add(t.key, BYTES, 100 * c, container.attributes())

    run = Run(receiver, Scripted(script, origin=created))
    a, b = pod_target(1, containers=2), pod_target(2)
    r = [run.cycle([a, b]), run.cycle([a, b]), run.cycle([a]), run.cycle([a]), run.cycle([a])]
    # pod b left before cycle 3: its series end there, once, on its own Resource
    ended_b = r[2].target(b.key)
    assert ended_b is not None and bytes_points(r[2], b) == [(created, 0, NO_RECORDED_VALUE)]
    assert all(x.target(b.key) is None for x in r[3:])
    # a's container c1 stops being reported at cycle 3: one end marker, then nothing
    c1 = a.containers[1].container_id
    flags_per_cycle = [[p.flags for p in x.target(a.key).numbers(BYTES)  # type: ignore[union-attr]
                        if dict(p.attributes)["container.id"] == c1] for x in r]
    assert flags_per_cycle == [[0], [0], [NO_RECORDED_VALUE], [], []]
    assert run.checker.flagged == 2


def test_a_series_back_after_its_end_restarts_with_a_baseline(receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12
    values = {1: 100, 2: 200, 4: 450, 5: 500}  # missing at cycle 3 (one unreadable cycle)

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        if c in values:
            s.add(t.key, BYTES, values[c], {})

    run = Run(receiver, Scripted(script, origin=created))
    pod = pod_target(1)
    r = [run.cycle([pod]) for _ in range(5)]
    assert [bytes_points(x, pod) for x in r] == [
        [(created, 100, 0)], [(created, 200, 0)], [(created, 0, NO_RECORDED_VALUE)],
        [(r[3].time_ns, 0, 0)], [(r[3].time_ns, 50, 0)]]


def test_a_collector_that_fails_leaves_a_gap_not_an_end(receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12
    collector = Scripted(lambda c, t, s: s.add(t.key, BYTES, 10 * c, {}), origin=created)
    run = Run(receiver, collector)
    pod = pod_target(1)
    run.cycle([pod])
    collector.fail = True
    failed = run.cycle([pod])
    collector.fail = False
    after = run.cycle([pod])
    assert bytes_points(failed, pod) == []
    assert bytes_points(after, pod) == [(created, 30, 0)]
    assert run.stats.get("kpod.agent.errors", **{"kpod.component": "scripted", "error.type": "collect"}) == 1


def test_first_event_counters_are_zero_for_every_known_container_until_their_first_event(
        receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        if c >= 3:  # container c0 retransmits once in cycle 3: its map entry appears
            s.add(t.key, RETRANSMITS, 1, dict(sorted(t.containers[0].attributes().items())))

    run = Run(receiver, Scripted(script, origin=created, zeros=True))
    pod = pod_target(1, containers=2)
    r = [run.cycle([pod]) for _ in range(3)]

    def values(x: CycleResult) -> dict[str, tuple[int, int | float]]:
        t = x.target(pod.key)
        assert t is not None
        return {str(dict(p.attributes)["k8s.container.name"]): (p.start_ns, p.value) for p in t.numbers(RETRANSMITS)}

    assert [values(x) for x in r] == [{"c0": (created, 0), "c1": (created, 0)}] * 2 + [
        {"c0": (created, 1), "c1": (created, 0)}]


def test_no_first_event_zeros_for_a_container_the_collector_cannot_measure(receiver: OtlpReceiver) -> None:
    run = Run(receiver, Scripted(lambda c, t, s: None, origin=1, zeros=False))
    pod = pod_target(1, containers=2)
    result = run.cycle([pod])
    assert result.target(pod.key).numbers(RETRANSMITS) == []  # type: ignore[union-attr]


def test_bad_values_cost_only_their_own_target(receiver: OtlpReceiver) -> None:
    created = time.time_ns() - 10**12
    pods = [pod_target(i) for i in range(5)]
    bad = {pods[0].key: ("value", 2**70), pods[1].key: ("attr", "\udcff not utf-8"),
           pods[2].key: ("value", "12"), pods[3].key: ("value", None)}

    def script(c: int, t: Target, s: CollectorSnapshot) -> None:
        kind, v = bad.get(t.key, ("", 0))
        if kind == "value":
            s.add(t.key, BYTES, v, {})  # type: ignore[arg-type]
        elif kind == "attr":
            s.add(t.key, BYTES, 5, {"k8s.container.name": v})
        else:
            s.add(t.key, BYTES, 5 * c, {})

    run = Run(receiver, Scripted(script, origin=created))
    for _ in range(2):
        run.cycle(pods)
    got = {kv.value.string_value for item in receiver.received for rm in item.request.resource_metrics
           for kv in rm.resource.attributes if kv.key == "k8s.pod.uid"}
    assert got == {pods[4].key}  # the good pod, every cycle; the bad ones cost their own points only
    last = receiver.received[-1].request
    good = [rm for rm in last.resource_metrics if any(kv.value.string_value == pods[4].key
                                                      for kv in rm.resource.attributes)]
    assert [dp.as_int for sm in good[0].scope_metrics for m in sm.metrics for dp in m.sum.data_points] == [10]
    errors = {e: run.stats.get("kpod.agent.errors", **{"kpod.component": "pipeline", "error.type": e})
              for e in ("value", "encode")}
    assert errors == {"value": 4, "encode": 4}  # 2 cycles x (2 bad values, 2 unencodable targets)


def test_discovery_failure_keeps_measuring_the_last_pods() -> None:
    from kpod_otel.agent import Agent

    class Flaky:
        def __init__(self) -> None:
            self.fail = False

        def start(self) -> None: ...

        def stop(self) -> None: ...

        def targets(self) -> list[Target]:
            if self.fail:
                raise RuntimeError("API server unreachable")
            return [pod_target(1)]

    class Keep:
        def __init__(self) -> None:
            self.results: list[CycleResult] = []

        def deliver(self, result: CycleResult, deadline_s: float, cancel: object = None) -> bool:
            self.results.append(result)
            return True

        def close(self) -> None: ...

    stats = AgentStats()
    source, sink = Flaky(), Keep()
    pipeline = MetricsPipeline([Scripted(lambda c, t, s: s.add(t.key, BYTES, c, {}), origin=1)], {}, stats)
    agent = Agent(source, pipeline, [sink], stats, interval_s=15, export_timeout_s=5)
    agent.run_cycle()
    source.fail = True
    agent.run_cycle()
    flags = [[p.flags for t in r.workloads for p in t.numbers(BYTES)] for r in sink.results]
    assert flags == [[0], [0]]  # measured, not ended
