"""Pod churn: 5,000 pods appear and disappear over 50 cycles through the real exporter and receiver."""

from __future__ import annotations

import resource

from kpod_otel.export.exporter import OtlpExporter
from kpod_otel.export.otlp_settings import settings_from_env
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.export.resources import agent_resource_attributes
from kpod_otel.points import NO_RECORDED_VALUE
from kpod_otel.selfmetrics import AgentStats, SelfMetricsCollector
from tests.export.helpers import ScriptedCollector, attrs, pod_target
from tests.fakes.otlp import OtlpReceiver


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_churn_5000_pods_50_cycles() -> None:
    receiver = OtlpReceiver().start("grpc")
    try:
        stats = AgentStats()
        pipeline = MetricsPipeline([ScriptedCollector(), SelfMetricsCollector(stats)],
                                   agent_resource_attributes("node-1"), stats)
        exporter = OtlpExporter(settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}), stats)
        # 110 pods live at a time; every cycle 100 leave and 100 new ones arrive: 5,000 lifecycles in 50 cycles
        live = [pod_target(i, 2) for i in range(110)]
        next_id = 110
        rss: list[int] = []
        prev_gone: set[str] = set()
        prev_prev_gone: set[str] = set()
        for _cycle in range(50):
            gone = {t.key for t in live[:100]}
            assert exporter.export(pipeline.collect(live).request).ok
            req = receiver.wait_for(1)[-1].request
            uids = {attrs(rm.resource.attributes).get("k8s.pod.uid") for rm in req.resource_metrics} - {None}
            # the pods that left last cycle are here once more, with their end-of-series points only
            assert uids == {t.key for t in live} | prev_gone
            ended = {attrs(rm.resource.attributes)["k8s.pod.uid"]: rm for rm in req.resource_metrics
                     if attrs(rm.resource.attributes).get("k8s.pod.uid") in prev_gone}
            for rm in ended.values():
                flags = [dp.flags for sm in rm.scope_metrics for m in sm.metrics
                         for dp in getattr(m, m.WhichOneof("data")).data_points]
                assert flags and all(f == NO_RECORDED_VALUE for f in flags)
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        for dp in getattr(m, m.WhichOneof("data")).data_points:
                            assert "otel.metric.overflow" not in attrs(dp.attributes)
            assert not (prev_prev_gone & uids)  # pods that left two cycles ago are never seen again
            prev_prev_gone, prev_gone = prev_gone, gone
            live = live[100:] + [pod_target(next_id + k, 2) for k in range(100)]
            next_id += 100
            receiver.clear()
            rss.append(rss_kib())
        assert next_id - 110 == 5000
        assert pipeline.tracked_targets == 110
        growth = rss[-1] - rss[9]
        print(f"RSS after cycle 10: {rss[9]} KiB, after cycle 50: {rss[-1]} KiB, growth {growth} KiB")
        assert growth < 10 * 1024
    finally:
        receiver.stop()
