"""otel-collector-config.yaml: valid YAML, wired pipelines, only components of the contrib distribution.

No collector binary can be installed here, so the component set is checked against the contrib
distribution's build manifest, kept below with its source.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_manifests import COLLECTOR_CONFIG, OVERLAY

# Go module basenames of every component in the otelcol-contrib distribution, as listed in
# open-telemetry/opentelemetry-collector-releases, distributions/otelcol-contrib/manifest.yaml
# (commit 008cde8ca78cc0286ee3f0de92fa95e1641a445a; all components at v0.136.0, the image tag the overlay
# pins). A config type id maps to the module "<id without underscores><kind>" (health_check ->
# healthcheckextension) or, for the few modules without the suffix, "<id without underscores>".
CONTRIB_VERSION = "0.136.0"


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())



CONTRIB_MODULES: dict[str, frozenset[str]] = {
    "extensions": words("""
        zpagesextension ackextension asapauthextension awsproxy azureauthextension basicauthextension
        bearertokenauthextension cgroupruntimeextension datadogextension
        awscloudwatchmetricstreamsencodingextension awslogsencodingextension
        googlecloudlogentryencodingextension jaegerencodingextension jsonlogencodingextension
        otlpencodingextension skywalkingencodingextension textencodingextension zipkinencodingextension
        googleclientauthextension headerssetterextension healthcheckextension httpforwarderextension
        jaegerremotesampling oauth2clientauthextension dockerobserver ecsobserver ecstaskobserver
        hostobserver k8sobserver kafkatopicsobserver oidcauthextension opampextension pprofextension
        sigv4authextension filestorage dbstorage redisstorageextension sumologicextension k8sleaderelector
    """),
    "exporters": words("""
        debugexporter nopexporter otlpexporter otlphttpexporter alibabacloudlogserviceexporter
        awscloudwatchlogsexporter awsemfexporter awskinesisexporter awsxrayexporter awss3exporter
        azureblobexporter azuredataexplorerexporter azuremonitorexporter bmchelixexporter carbonexporter
        cassandraexporter clickhouseexporter coralogixexporter datadogexporter datasetexporter dorisexporter
        elasticsearchexporter faroexporter fileexporter googlecloudexporter googlecloudpubsubexporter
        googlemanagedprometheusexporter honeycombmarkerexporter influxdbexporter kafkaexporter
        loadbalancingexporter logicmonitorexporter logzioexporter mezmoexporter opensearchexporter
        otelarrowexporter prometheusexporter prometheusremotewriteexporter pulsarexporter rabbitmqexporter
        sapmexporter sentryexporter signalfxexporter splunkhecexporter stefexporter sumologicexporter
        syslogexporter tencentcloudlogserviceexporter tinybirdexporter zipkinexporter
    """),
    "processors": words("""
        batchprocessor memorylimiterprocessor attributesprocessor cumulativetodeltaprocessor
        coralogixprocessor deltatocumulativeprocessor deltatorateprocessor filterprocessor geoipprocessor
        groupbyattrsprocessor groupbytraceprocessor intervalprocessor isolationforestprocessor
        k8sattributesprocessor logdedupprocessor metricsgenerationprocessor metricstarttimeprocessor
        metricstransformprocessor probabilisticsamplerprocessor redactionprocessor remotetapprocessor
        resourcedetectionprocessor resourceprocessor schemaprocessor spanprocessor sumologicprocessor
        tailsamplingprocessor transformprocessor
    """),
    "receivers": words("""
        nopreceiver otlpreceiver activedirectorydsreceiver aerospikereceiver apachereceiver
        apachesparkreceiver awscloudwatchreceiver awscontainerinsightreceiver awsecscontainermetricsreceiver
        awsfirehosereceiver awss3receiver awsxrayreceiver azureblobreceiver azureeventhubreceiver
        azuremonitorreceiver bigipreceiver carbonreceiver chronyreceiver cloudflarereceiver
        cloudfoundryreceiver collectdreceiver couchdbreceiver datadogreceiver dockerstatsreceiver
        elasticsearchreceiver envoyalsreceiver expvarreceiver faroreceiver filelogreceiver filestatsreceiver
        flinkmetricsreceiver fluentforwardreceiver githubreceiver googlecloudmonitoringreceiver
        googlecloudpubsubreceiver googlecloudspannerreceiver haproxyreceiver hostmetricsreceiver
        httpcheckreceiver influxdbreceiver iisreceiver jaegerreceiver jmxreceiver journaldreceiver
        k8sclusterreceiver k8seventsreceiver k8sobjectsreceiver kafkametricsreceiver kafkareceiver
        kubeletstatsreceiver libhoneyreceiver lokireceiver memcachedreceiver mongodbatlasreceiver
        mongodbreceiver mysqlreceiver namedpipereceiver netflowreceiver nginxreceiver nsxtreceiver
        ntpreceiver oracledbreceiver otlpjsonfilereceiver otelarrowreceiver podmanreceiver
        postgresqlreceiver prometheusreceiver prometheusremotewritereceiver purefareceiver purefbreceiver
        pulsarreceiver rabbitmqreceiver receivercreator redisreceiver riakreceiver saphanareceiver
        signalfxreceiver simpleprometheusreceiver skywalkingreceiver snowflakereceiver solacereceiver
        splunkenterprisereceiver splunkhecreceiver stefreceiver sqlqueryreceiver sqlserverreceiver
        sshcheckreceiver statsdreceiver syslogreceiver tcpcheckreceiver tcplogreceiver tlscheckreceiver
        udplogreceiver vcenterreceiver wavefrontreceiver snmpreceiver webhookeventreceiver
        windowseventlogreceiver windowsperfcountersreceiver zipkinreceiver zookeeperreceiver
    """),
    "connectors": words("""
        forwardconnector countconnector datadogconnector exceptionsconnector failoverconnector
        grafanacloudconnector otlpjsonconnector roundrobinconnector routingconnector servicegraphconnector
        spanmetricsconnector sumconnector signaltometricsconnector
    """),
}
KIND_SUFFIX = {"extensions": "extension", "exporters": "exporter", "processors": "processor",
               "receivers": "receiver", "connectors": "connector"}

# Settings each component we use accepts (from each component's README / config.go at the same release):
# catches a misspelt key, which the collector would reject at start-up.
ALLOWED_KEYS: dict[tuple[str, str], set[str]] = {
    ("extensions", "health_check"): {"endpoint", "path", "tls", "response_body", "check_collector_pipeline"},
    ("receivers", "otlp"): {"protocols"},
    ("processors", "memory_limiter"): {"check_interval", "limit_mib", "spike_limit_mib", "limit_percentage",
                                       "spike_limit_percentage", "min_gc_interval_when_soft_limited",
                                       "min_gc_interval_when_hard_limited"},
    ("processors", "batch"): {"timeout", "send_batch_size", "send_batch_max_size", "metadata_keys",
                              "metadata_cardinality_limit"},
    ("processors", "k8sattributes"): {"auth_type", "passthrough", "pod_association", "extract", "filter",
                                      "exclude", "wait_for_metadata", "wait_for_metadata_timeout"},
    ("exporters", "prometheus"): {"endpoint", "tls", "const_labels", "namespace", "send_timestamps",
                                  "metric_expiration", "resource_to_telemetry_conversion",
                                  "enable_open_metrics", "add_metric_suffixes", "translation_strategy",
                                  "without_scope_info"},
    ("exporters", "debug"): {"verbosity", "sampling_initial", "sampling_thereafter", "use_internal_logger"},
    ("exporters", "otlp"): {"endpoint", "compression", "headers", "tls", "timeout", "retry_on_failure",
                            "sending_queue", "balancer_name", "auth", "keepalive", "write_buffer_size",
                            "read_buffer_size", "authority"},
}
OTLP_PROTOCOL_KEYS = {
    "grpc": {"endpoint", "transport", "tls", "max_recv_msg_size_mib", "max_concurrent_streams",
             "read_buffer_size", "write_buffer_size", "keepalive", "auth", "include_metadata"},
    "http": {"endpoint", "tls", "cors", "include_metadata", "traces_url_path", "metrics_url_path",
             "logs_url_path", "max_request_body_size", "auth", "response_headers"},
}


def load(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def with_optional_blocks(text: str) -> str:
    """The config with its `--- optional: ... (begin)/(end) ---` blocks uncommented."""
    out, inside = [], False
    for line in text.splitlines():
        if re.search(r"# --- optional: .* \(begin\) ---", line):
            inside = True
            continue
        if re.search(r"# --- optional: .* \(end\) ---", line):
            inside = False
            continue
        out.append(re.sub(r"^(\s*)# ?", r"\1", line, count=1) if inside else line)
    assert not inside
    return "\n".join(out) + "\n"


def type_of(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def in_contrib(kind: str, component_id: str) -> bool:
    t = type_of(component_id).replace("_", "")
    return bool({t + KIND_SUFFIX[kind], t} & CONTRIB_MODULES[kind])


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load(COLLECTOR_CONFIG.read_text())


@pytest.fixture(scope="module")
def full_config() -> dict[str, Any]:
    return load(with_optional_blocks(COLLECTOR_CONFIG.read_text()))


def test_optional_blocks_are_there(config: dict[str, Any], full_config: dict[str, Any]) -> None:
    assert "k8sattributes" not in config["processors"]
    assert "k8sattributes" in full_config["processors"]
    assert "otlp/backend" in full_config["exporters"]


@pytest.mark.parametrize("which", ["as shipped", "with optional blocks"])
def test_only_contrib_components(config: dict[str, Any], full_config: dict[str, Any], which: str) -> None:
    cfg = config if which == "as shipped" else full_config
    assert set(cfg) <= {"extensions", "receivers", "processors", "exporters", "connectors", "service"}
    for kind in KIND_SUFFIX:
        for component_id in cfg.get(kind) or {}:
            assert in_contrib(kind, component_id), f"{kind}.{component_id} is not in otelcol-contrib"


def test_contrib_check_can_fail() -> None:
    assert in_contrib("processors", "memory_limiter")
    assert in_contrib("extensions", "file_storage")
    assert not in_contrib("processors", "memorylimiter_v2")
    assert not in_contrib("exporters", "logging")  # removed from the distributions in 0.111
    assert not in_contrib("receivers", "batch")


@pytest.mark.parametrize("which", ["as shipped", "with optional blocks"])
def test_settings_are_known(config: dict[str, Any], full_config: dict[str, Any], which: str) -> None:
    cfg = config if which == "as shipped" else full_config
    for kind in KIND_SUFFIX:
        for component_id, settings in (cfg.get(kind) or {}).items():
            allowed = ALLOWED_KEYS.get((kind, type_of(component_id)))
            assert allowed is not None, f"add the allowed settings of {kind}.{component_id} to the test"
            assert set(settings or {}) <= allowed, f"{kind}.{component_id}: {set(settings) - allowed}"
    for proto, settings in cfg["receivers"]["otlp"]["protocols"].items():
        assert set(settings) <= OTLP_PROTOCOL_KEYS[proto], proto


def test_pipeline(config: dict[str, Any]) -> None:
    service = config["service"]
    assert set(service) <= {"extensions", "pipelines", "telemetry"}
    assert set(service["extensions"]) == set(config["extensions"])
    (name,) = service["pipelines"]
    assert name == "metrics"
    p = service["pipelines"][name]
    assert p["receivers"] == ["otlp"]
    assert p["processors"][0] == "memory_limiter"  # first, so that it can refuse data under pressure
    assert "batch" in p["processors"]
    assert {"prometheus", "debug"} <= set(p["exporters"])
    # Everything defined is used, everything used is defined.
    for kind in ("receivers", "processors", "exporters"):
        assert set(p[kind]) == set(config[kind]), kind


def test_receiver_ports(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    # A 110-pod node exports ~7,000 points per cycle; the agent gzips, but stay above the 4 MiB default.
    assert protocols["grpc"]["max_recv_msg_size_mib"] >= 4


def test_prometheus_labels_carry_the_pod_resource(config: dict[str, Any]) -> None:
    """Without resource_to_telemetry_conversion, per-pod Resources (which carry no service.name) collapse
    into one job/instance and the series of different pods collide."""
    prom = config["exporters"]["prometheus"]
    assert prom["resource_to_telemetry_conversion"] == {"enabled": True}
    assert prom.get("namespace", "") == ""  # keeps kpod_disk_read_bytes_total, the predecessor's name


def test_memory_limiter_and_debug_values(config: dict[str, Any]) -> None:
    ml = config["processors"]["memory_limiter"]
    assert re.fullmatch(r"\d+(ms|s)", ml["check_interval"])
    assert 0 < ml["spike_limit_percentage"] < ml["limit_percentage"] <= 100
    assert config["exporters"]["debug"]["verbosity"] in ("basic", "normal", "detailed")


def test_k8sattributes_associates_on_the_pod_uid(full_config: dict[str, Any]) -> None:
    k8s = full_config["processors"]["k8sattributes"]
    assert k8s["pod_association"] == [{"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]}]
    text = COLLECTOR_CONFIG.read_text()
    assert "resources [pods, namespaces, nodes] verbs [get, list, watch]" in text  # the RBAC it needs


def test_overlay_pins_the_release_the_list_comes_from() -> None:
    kz = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    image = next(i for i in kz["images"] if i["name"] == "otel/opentelemetry-collector-contrib")
    assert image["newTag"] == CONTRIB_VERSION
