"""The standard OTEL_EXPORTER_OTLP_* variables, resolved as the OTel specification says."""

from __future__ import annotations

import pytest

from kpod_otel.export.otlp_settings import Protocol, SettingsError, settings_from_env


def test_defaults_grpc_gzip() -> None:
    s = settings_from_env({})
    assert s.protocol is Protocol.GRPC and s.endpoint == "localhost:4317" and s.insecure and s.gzip
    assert s.timeout_s == 10.0


def test_http_appends_signal_path_to_generic_endpoint_only() -> None:
    s = settings_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                           "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/"})
    assert s.endpoint == "https://collector:4318/v1/metrics" and not s.insecure
    s = settings_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                           "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:9999/custom"})
    assert s.endpoint == "http://c:9999/custom"


def test_metrics_specific_variables_win() -> None:
    s = settings_from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4317",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://specific:4317",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "b=2,c=x%20y",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    })
    assert s.protocol is Protocol.GRPC and s.endpoint == "specific:4317" and not s.insecure
    assert s.timeout_s == 2.5 and s.gzip and s.headers == (("b", "2"), ("c", "x y"))


def test_grpc_scheme_less_endpoint_uses_insecure_variable() -> None:
    assert not settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}).insecure
    assert settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
                              "OTEL_EXPORTER_OTLP_INSECURE": "true"}).insecure


def test_tls_files() -> None:
    s = settings_from_env({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca.pem", "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/k.pem",
                           "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": "/c.pem"})
    assert (s.certificate_file, s.client_key_file, s.client_certificate_file) == ("/ca.pem", "/k.pem", "/c.pem")


@pytest.mark.parametrize(("env", "needle"), [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "allowed: grpc | http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "allowed: gzip | none"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "secretvalue"}, "key=value"),
])
def test_bad_values(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env(env)
    assert needle in str(err.value)
    assert "secretvalue" not in str(err.value)


def test_describe_hides_header_values() -> None:
    s = settings_from_env({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=topsecret"})
    assert "topsecret" not in s.describe() and "topsecret" not in repr(s) and "api-key" in s.describe()
