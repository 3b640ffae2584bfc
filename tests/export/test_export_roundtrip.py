"""Collector -> pipeline -> OTLP exporter -> a real receiver, over gRPC and HTTP/protobuf with gzip."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from kpod_otel.export.exporter import OtlpExporter, split_request
from kpod_otel.export.otlp_settings import settings_from_env
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.export.resources import agent_resource_attributes
from kpod_otel.selfmetrics import AgentStats, SelfMetricsCollector
from tests.export.helpers import ScriptedCollector, attrs, by_resource, pod_target
from tests.fakes.otlp import ByteCountingProxy, OtlpReceiver

PROTOCOLS = {"grpc": "grpc", "http": "http/protobuf"}


@pytest.fixture(params=["grpc", "http"])
def receiver(request: pytest.FixtureRequest):
    r = OtlpReceiver().start(request.param)
    yield r
    r.stop()


def make(receiver: OtlpReceiver, endpoint: str | None = None, **env: str):
    stats = AgentStats()
    collector = ScriptedCollector()
    pipeline = MetricsPipeline([collector, SelfMetricsCollector(stats)],
                               agent_resource_attributes("node-1"), stats)
    settings = settings_from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint or receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOLS[receiver.protocol],
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3000",
        **env,
    })
    return stats, collector, pipeline, OtlpExporter(settings, stats)


def test_values_arrive_under_each_pods_resource_with_units(receiver: OtlpReceiver) -> None:
    _stats, _collector, pipeline, exporter = make(receiver, OTEL_EXPORTER_OTLP_HEADERS="x-tenant=blue")
    targets = [pod_target(i, containers=2) for i in range(3)]
    result = pipeline.collect(targets)
    assert exporter.export(result.request).ok
    got = by_resource([r.request for r in receiver.wait_for(1)])
    assert receiver.received[0].headers.get("x-tenant") == "blue"

    for t in targets:
        entry = got[t.key]
        assert entry["resource"] == dict(t.resource)
        m = entry["test.bytes"]
        assert m.unit == "By" and m.sum.is_monotonic
        assert m.sum.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_CUMULATIVE
        values = {attrs(dp.attributes)["k8s.container.name"]: dp.as_int for dp in m.sum.data_points}
        assert values == {f"c{j}": ScriptedCollector.bytes_for(t, j, 1) for j in range(2)}
        assert {attrs(dp.attributes)["container.id"] for dp in m.sum.data_points} == {
            c.container_id for c in t.containers}
        assert entry["test.level"].gauge.data_points[0].as_double == 0.5
        assert not entry["test.balance"].sum.is_monotonic
        assert entry["test.balance"].sum.data_points[0].as_int == -3
        h = entry["test.latency"].histogram
        assert h.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_CUMULATIVE
        dp = h.data_points[0]
        assert list(dp.explicit_bounds) == [0.001, 0.01] and list(dp.bucket_counts) == [1, 2, 3]
        assert (dp.count, dp.sum) == (6, 0.5)

    agent = got["kpod-otel"]
    assert agent["resource"]["service.name"] == "kpod-otel"
    assert agent["resource"]["k8s.node.name"] == "node-1"
    assert "k8s.pod.uid" not in agent["resource"]
    assert agent["kpod.agent.targets"].gauge.data_points[0].as_int == 3


def test_cumulative_start_time_is_stable_across_cycles(receiver: OtlpReceiver) -> None:
    _, _, pipeline, exporter = make(receiver)
    targets = [pod_target(1)]
    for _ in range(3):
        assert exporter.export(pipeline.collect(targets).request).ok
    reqs = [r.request for r in receiver.wait_for(3)]
    points = [by_resource([r])[targets[0].key]["test.bytes"].sum.data_points[0] for r in reqs]
    assert len({p.start_time_unix_nano for p in points}) == 1
    assert [p.as_int for p in points] == [ScriptedCollector.bytes_for(targets[0], 0, c) for c in (1, 2, 3)]
    assert points[0].time_unix_nano < points[1].time_unix_nano < points[2].time_unix_nano


def test_gzip_on_the_wire(receiver: OtlpReceiver) -> None:
    proxy = ByteCountingProxy(receiver.port)
    try:
        _, _, pipeline, exporter = make(receiver, endpoint=f"http://127.0.0.1:{proxy.port}")
        request = pipeline.collect([pod_target(i, 3) for i in range(50)]).request
        assert exporter.export(request).ok
        receiver.wait_for(1)
        if receiver.protocol == "http":
            assert receiver.received[0].compressed
        # the payload is repetitive: gzip makes the wire bytes a fraction of the serialized size
        assert proxy.client_bytes < request.ByteSize() / 3, (proxy.client_bytes, request.ByteSize())
    finally:
        proxy.close()


def test_no_compression_when_configured(receiver: OtlpReceiver) -> None:
    proxy = ByteCountingProxy(receiver.port)
    try:
        _, _, pipeline, exporter = make(receiver, endpoint=f"http://127.0.0.1:{proxy.port}",
                                        OTEL_EXPORTER_OTLP_COMPRESSION="none")
        request = pipeline.collect([pod_target(i, 3) for i in range(50)]).request
        assert exporter.export(request).ok
        receiver.wait_for(1)
        assert proxy.client_bytes > request.ByteSize()
    finally:
        proxy.close()


def test_large_cycle_is_split_between_pods(receiver: OtlpReceiver) -> None:
    stats, _, pipeline, _ = make(receiver)
    settings = settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOLS[receiver.protocol]})
    exporter = OtlpExporter(settings, stats, max_points=100)
    targets = [pod_target(i, 2) for i in range(40)]
    result = pipeline.collect(targets)
    outcome = exporter.export(result.request)
    assert outcome.ok and outcome.requests > 1
    received = receiver.wait_for(outcome.requests)
    sizes = []
    for r in received:
        n = sum(len(getattr(m, m.WhichOneof("data")).data_points)
                for rm in r.request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        sizes.append(n)
    assert sum(sizes) == result.points
    assert max(sizes) <= 100
    uids = [attrs(rm.resource.attributes).get("k8s.pod.uid") for r in received for rm in r.request.resource_metrics]
    assert sorted(u for u in uids if u) == sorted(t.key for t in targets)  # each pod exactly once


def test_outage_logs_once_and_recovers(receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture) -> None:
    stats, _, pipeline, exporter = make(receiver)
    targets = [pod_target(1)]
    assert exporter.export(pipeline.collect(targets).request).ok
    receiver.behaviour.fail = True
    with caplog.at_level(logging.WARNING, logger="kpod_otel"):
        for _ in range(5):
            assert not exporter.export(pipeline.collect(targets).request).ok
        receiver.behaviour.fail = False
        assert exporter.export(pipeline.collect(targets).request).ok
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failed) == 1 and len(recovered) == 1
    assert stats.get("kpod.agent.exports", **{"kpod.export.result": "failure"}) == 5
    # totals continue after the outage: the cumulative value of the 7th cycle, same start time
    first, last = receiver.received[0].request, receiver.received[-1].request
    p0 = by_resource([first])[targets[0].key]["test.bytes"].sum.data_points[0]
    p1 = by_resource([last])[targets[0].key]["test.bytes"].sum.data_points[0]
    assert p1.as_int == ScriptedCollector.bytes_for(targets[0], 0, 7)
    assert p1.start_time_unix_nano == p0.start_time_unix_nano


def test_hanging_receiver_is_bounded_by_the_deadline(receiver: OtlpReceiver) -> None:
    import time

    _, _, pipeline, exporter = make(receiver)
    receiver.behaviour.hang.set()
    t0 = time.monotonic()
    outcome = exporter.export(pipeline.collect([pod_target(1)]).request, deadline_s=1.0)
    elapsed = time.monotonic() - t0
    receiver.behaviour.release.set()
    assert not outcome.ok
    assert elapsed < 2.5, elapsed


def test_headers_never_logged(receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture) -> None:
    secret = "Bearer s3cr3t-t0ken-value"
    with caplog.at_level(logging.DEBUG):
        _stats, _, pipeline, exporter = make(receiver, OTEL_EXPORTER_OTLP_HEADERS=f"authorization={secret}")
        receiver.behaviour.fail = True
        exporter.export(pipeline.collect([pod_target(1)]).request)
        logging.getLogger("kpod_otel").info("settings: %s", exporter.settings.describe())
        logging.getLogger("kpod_otel").info("settings repr: %r", exporter.settings)
    text = caplog.text
    assert "s3cr3t" not in text
    assert "authorization" in text  # the header's name is shown, its value never


@pytest.mark.parametrize(("max_points", "max_bytes"), [(100, 3 * 1024 * 1024), (5000, 2000)])
def test_encoded_cycle_is_split_and_sent_like_the_message(receiver: OtlpReceiver, max_points: int,
                                                          max_bytes: int) -> None:
    """The pipeline's serialized ResourceMetrics (what deliver() sends) arrive exactly as the message
    path's split of the same cycle would send them."""
    stats, _, pipeline, _ = make(receiver)
    settings = settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOLS[receiver.protocol]})
    exporter = OtlpExporter(settings, stats, max_points=max_points, max_bytes=max_bytes)
    result = pipeline.collect([pod_target(i, 2) for i in range(40)])
    expected = list(split_request(result.request, max_points, max_bytes))
    assert len(expected) > 1
    outcome = exporter.export_encoded(result.resources)
    assert outcome.ok and outcome.requests == len(expected)
    assert [r.request for r in receiver.wait_for(len(expected))] == expected
