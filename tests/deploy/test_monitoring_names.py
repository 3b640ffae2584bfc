"""scripts/monitoring/promnames.py: the Collector's Prometheus names of the catalog's metrics.

Truth: the exporter's own test vectors (prometheus/otlptranslator metric_namer_test.go and
label_namer_test.go, the library the contrib `prometheus` exporter names metrics with since it replaced
pkg/translator/prometheus), the names docs/metrics.md promises, the agent's real Resource attributes, and
the shipped Collector configuration (which must be the configuration those rules assume).
"""

from __future__ import annotations

import pytest
import yaml

from kpod_otel.catalog import METRICS, InstrumentKind
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.export.resources import agent_resource_attributes
from kpod_otel.model import ContainerTarget, PodInfo
from kpod_otel.selfmetrics import AgentStats
from scripts.monitoring.promnames import (
    AGENT_RESOURCE_ATTRIBUTES,
    CONTAINER_ATTRIBUTES,
    POD_RESOURCE_ATTRIBUTES,
    label_name,
    prom_metric,
    prometheus_name,
    series_index,
)
from tests.deploy.deploy_manifests import COLLECTOR_CONFIG

C, G, H, U = InstrumentKind.COUNTER, InstrumentKind.GAUGE, InstrumentKind.HISTOGRAM, InstrumentKind.UP_DOWN_COUNTER

# (name, unit, kind) -> name, from otlptranslator's TestMetricNamer_Build ("UTF8Allowed = false,
# WithMetricSuffixes = true" cases; MetricTypeMonotonicCounter is our counter).
EXPORTER_VECTORS = [
    ("requests", "", C, "requests_total"),
    ("cpu_usage", "1", G, "cpu_usage_ratio"),
    ("items", "1", C, "items_total"),
    ("response_time", "ms", G, "response_time_milliseconds"),
    ("memory_usage", "By", G, "memory_usage_bytes"),
    ("requests", "1/s", G, "requests_per_second"),
    ("throughput", "By/s", G, "throughput_bytes_per_second"),
    ("custom_metric", "custom_unit", G, "custom_metric_custom_unit"),
    ("custom_metric", "{custom}", G, "custom_metric"),
    ("custom_metric", "By/{custom}", G, "custom_metric_bytes"),
    ("requests_total", "", C, "requests_total"),
    ("cpu_usage_ratio", "1", G, "cpu_usage_ratio"),
    ("response_time_seconds", "s", G, "response_time_seconds"),
    ("otelcol_process_cpu_seconds", "s", C, "otelcol_process_cpu_seconds_total"),
    ("metric__with__multiple__underscores", "unit__multiple__underscores", G,
     "metric_with_multiple_underscores_unit_multiple_underscores"),
    ("custom_metric", "unit@with#special/chars", G, "custom_metric_unit_with_special_per_chars"),
]


@pytest.mark.parametrize(("name", "unit", "kind", "expected"), EXPORTER_VECTORS)
def test_exporter_test_vectors(name: str, unit: str, kind: InstrumentKind, expected: str) -> None:
    assert prometheus_name(name, unit, kind) == expected


@pytest.mark.parametrize(("attribute", "expected"), [
    # otlptranslator's label_namer_test.go
    ("label!with&special$chars)", "label_with_special_chars_"), ("123label", "key_123label"),
    ("label.name__with&&special##chars", "label_name_with_special_chars"),
    # ours
    ("k8s.pod.name", "k8s_pod_name"), ("kpod.switch.type", "kpod_switch_type"),
])
def test_label_vectors(attribute: str, expected: str) -> None:
    assert label_name(attribute) == expected


@pytest.mark.parametrize(("name", "unit", "kind", "expected"), [
    # docs/metrics.md's own examples
    ("kpod.disk.read.bytes", "By", C, "kpod_disk_read_bytes_total"),
    ("kpod.cpu.runqueue.latency", "s", H, "kpod_cpu_runqueue_latency_seconds"),
    # the unit is not repeated when the name has it; annotations add nothing; ratio only for gauges
    ("kpod.fs.usage.bytes", "By", G, "kpod_fs_usage_bytes"),
    ("kpod.cpu.context.switches", "{switch}", C, "kpod_cpu_context_switches_total"),
    ("kpod.agent.bpf.program.loaded", "1", G, "kpod_agent_bpf_program_loaded_ratio"),
    ("kpod.agent.bpf.program.run.time", "s", C, "kpod_agent_bpf_program_run_time_seconds_total"),
    # issue 15's metrics, as that issue names them
    ("kpod.cpu.time", "s", C, "kpod_cpu_time_seconds_total"),
    ("kpod.cpu.limit", "{cpu}", G, "kpod_cpu_limit"),
    ("kpod.mem.working_set", "By", G, "kpod_mem_working_set_bytes"),
    ("kpod.pressure.stall.time", "s", C, "kpod_pressure_stall_time_seconds_total"),
    # a non-monotonic sum is a gauge without _total (and without _ratio)
    ("kpod.some.level", "1", U, "kpod_some_level"),
])
def test_kpod_names(name: str, unit: str, kind: InstrumentKind, expected: str) -> None:
    assert prometheus_name(name, unit, kind) == expected


def test_histograms_have_bucket_sum_count() -> None:
    rq = prom_metric(next(m for m in METRICS if m.name == "kpod.cpu.runqueue.latency"))
    assert rq.series == ("kpod_cpu_runqueue_latency_seconds_bucket", "kpod_cpu_runqueue_latency_seconds_sum",
                         "kpod_cpu_runqueue_latency_seconds_count")
    assert "le" in rq.labels
    assert "le" not in prom_metric(next(m for m in METRICS if m.kind is C)).labels


def test_no_two_catalog_metrics_share_a_series() -> None:
    assert len(series_index(METRICS)) == sum(len(prom_metric(m).series) for m in METRICS)


def test_collector_config_is_what_the_names_assume() -> None:
    """Suffixes on and UTF-8 escaped (the default strategy), no namespace, Resource attributes as labels."""
    prom = yaml.safe_load(COLLECTOR_CONFIG.read_text())["exporters"]["prometheus"]
    assert prom["resource_to_telemetry_conversion"] == {"enabled": True}
    assert "namespace" not in prom
    assert prom.get("translation_strategy", "UnderscoreEscapingWithSuffixes") == "UnderscoreEscapingWithSuffixes"
    assert prom.get("add_metric_suffixes", True) is True


def test_resource_attributes_are_the_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    mapper = PodCgroupMapper(None, AgentStats(), node_name="node-a", cluster_name="c1")  # type: ignore[arg-type]
    pod = mapper.resource(PodInfo(uid="u-1", name="web-0", namespace="shop", node_name="node-a"))
    assert sorted(pod) == sorted(POD_RESOURCE_ATTRIBUTES)
    assert sorted(ContainerTarget("app", "c0ffee", "x").attributes()) == sorted(CONTAINER_ATTRIBUTES)
    assert sorted(agent_resource_attributes("node-a", "c1")) == sorted(AGENT_RESOURCE_ATTRIBUTES)
