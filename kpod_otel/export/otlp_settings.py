"""Exporter settings from the standard OTEL_EXPORTER_OTLP_* variables (OTel specification rules).

The signal-specific variable (`OTEL_EXPORTER_OTLP_METRICS_*`) wins over the generic one. The SDK's
exporter classes do not read `..._PROTOCOL`, and disagree with the specification on the unit of
`..._TIMEOUT` (they read seconds); this module follows the specification: milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote, urlsplit


class Protocol(StrEnum):
    GRPC = "grpc"
    HTTP_PROTOBUF = "http/protobuf"


class SettingsError(ValueError):
    """An OTEL_* variable has a value we cannot use; the message names it and the allowed values."""


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    protocol: Protocol
    endpoint: str  # gRPC: host:port target; HTTP: full URL including /v1/metrics
    insecure: bool  # gRPC only: plaintext channel
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets: never logged
    timeout_s: float = 10.0
    gzip: bool = True
    certificate_file: str = ""
    client_key_file: str = ""
    client_certificate_file: str = ""

    def describe(self) -> str:
        """A loggable one-liner: no header values, ever."""
        tls = "plaintext" if self.insecure else "tls"
        if self.protocol is Protocol.HTTP_PROTOBUF:
            tls = "tls" if self.endpoint.startswith("https:") else "plaintext"
        names = ",".join(k for k, _ in self.headers) or "none"
        return (
            f"{self.protocol.value} {self.endpoint} ({tls}, gzip={'on' if self.gzip else 'off'}, "
            f"timeout={self.timeout_s:g}s, headers={names})"
        )


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The metrics-specific variable, else the generic one; unset or empty -> None."""
    for var in (f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = env.get(var, "").strip()
        if value:
            return value
    return None


def parse_headers(raw: str) -> tuple[tuple[str, str], ...]:
    """W3C-baggage-like `k1=v1,k2=v2` with percent-encoded values."""
    headers = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Do not echo the item: it may be a secret.
            raise SettingsError("OTEL_EXPORTER_OTLP_HEADERS: each item must be key=value")
        headers.append((key.strip().lower(), unquote(value.strip())))
    return tuple(headers)


def settings_from_env(env: Mapping[str, str]) -> OtlpSettings:
    proto_raw = _get(env, "PROTOCOL") or Protocol.GRPC.value
    try:
        protocol = Protocol(proto_raw)
    except ValueError:
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {proto_raw!r} is not supported; allowed: grpc | http/protobuf"
        ) from None

    timeout_raw = _get(env, "TIMEOUT")
    timeout_s = 10.0
    if timeout_raw is not None:
        try:
            timeout_s = float(timeout_raw) / 1000.0
        except ValueError:
            timeout_s = -1
        if not 0 < timeout_s <= 600:
            raise SettingsError(f"OTEL_EXPORTER_OTLP_TIMEOUT: {timeout_raw!r}; allowed: milliseconds 1..600000")

    comp = (_get(env, "COMPRESSION") or "gzip").lower()
    if comp not in ("gzip", "none"):
        raise SettingsError(f"OTEL_EXPORTER_OTLP_COMPRESSION: {comp!r}; allowed: gzip | none")

    headers = parse_headers(_get(env, "HEADERS") or "")
    specific = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
    generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    insecure_raw = (_get(env, "INSECURE") or "").lower()

    if protocol is Protocol.HTTP_PROTOBUF:
        if specific:
            endpoint = specific
        else:
            base = generic or "http://localhost:4318"
            endpoint = base.rstrip("/") + "/v1/metrics"
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise SettingsError(f"OTEL_EXPORTER_OTLP_ENDPOINT: {endpoint!r} needs an http:// or https:// URL")
        insecure = endpoint.startswith("http:")
    else:
        raw = specific or generic or "http://localhost:4317"
        parts = urlsplit(raw if "://" in raw else f"//{raw}")
        if not parts.hostname:
            raise SettingsError(f"OTEL_EXPORTER_OTLP_ENDPOINT: {raw!r} has no host")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        endpoint = f"{host}:{parts.port or 4317}"
        if parts.scheme == "https":
            insecure = False
        elif parts.scheme == "http":
            insecure = True
        else:  # no scheme: the INSECURE variable decides, TLS by default (specification)
            insecure = insecure_raw == "true"

    return OtlpSettings(
        protocol=protocol,
        endpoint=endpoint,
        insecure=insecure,
        headers=headers,
        timeout_s=timeout_s,
        gzip=comp == "gzip",
        certificate_file=_get(env, "CERTIFICATE") or "",
        client_key_file=_get(env, "CLIENT_KEY") or "",
        client_certificate_file=_get(env, "CLIENT_CERTIFICATE") or "",
    )
