"""Sends one serialized-ready OTLP request over gRPC or HTTP/protobuf. No retries here: cumulative series
(the default) restate their totals, so the next cycle carries everything a failed export would have
carried; under DELTA temporality a failed cycle is a gap the next point's start time shows, never a
double count (docs/configuration.md)."""

from __future__ import annotations

import gzip
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import grpc
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from kpod_otel import __version__
from kpod_otel.export.otlp_settings import OtlpSettings, Protocol

USER_AGENT = f"kpod-otel/{__version__}"
# opentelemetry/proto/collector/metrics/v1/metrics_service.proto: service MetricsService { rpc Export }
_EXPORT_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def _as_bytes(request: ExportMetricsServiceRequest | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    rejected_points: int = 0
    error: str = ""  # short, loggable: never contains header values


class Transport(ABC):
    @abstractmethod
    def send(
        self, request: ExportMetricsServiceRequest | bytes, timeout_s: float, cancel: threading.Event | None = None
    ) -> SendResult:
        """Send one request (a message, or one already serialized); give up after `timeout_s`, or as soon
        as `cancel` is set where the protocol allows it (gRPC; an HTTP request runs to its timeout)."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


class GrpcTransport(Transport):
    def __init__(self, settings: OtlpSettings) -> None:
        self._settings = settings
        options = [("grpc.primary_user_agent", USER_AGENT)]
        if settings.insecure:
            self._channel = grpc.insecure_channel(settings.endpoint, options=options)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(settings.certificate_file),
                private_key=_read(settings.client_key_file),
                certificate_chain=_read(settings.client_certificate_file),
            )
            self._channel = grpc.secure_channel(settings.endpoint, creds, options=options)
        # The generated stub's method, but taking serialized requests (the pipeline encodes them itself).
        self._export = self._channel.unary_unary(
            _EXPORT_METHOD, request_serializer=_as_bytes,
            response_deserializer=ExportMetricsServiceResponse.FromString,
        )
        self._metadata = tuple(settings.headers)

    def send(
        self, request: ExportMetricsServiceRequest | bytes, timeout_s: float, cancel: threading.Event | None = None
    ) -> SendResult:
        future = self._export.future(
            _as_bytes(request),
            metadata=self._metadata,
            timeout=timeout_s,
            compression=grpc.Compression.Gzip if self._settings.gzip else grpc.Compression.NoCompression,
        )
        if cancel is not None:
            # SIGTERM during an export: give up this one at once, so the final export gets the grace period.
            while not future.done():
                if cancel.wait(0.05):
                    future.cancel()
                    return SendResult(False, error="gRPC CANCELLED (shutting down)")
        try:
            response: ExportMetricsServiceResponse = future.result()
        except grpc.FutureCancelledError:
            return SendResult(False, error="gRPC CANCELLED")
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            return SendResult(False, error=f"gRPC {name}")
        rejected = response.partial_success.rejected_data_points if response.HasField("partial_success") else 0
        return SendResult(True, rejected_points=rejected)

    def close(self) -> None:
        self._channel.close()


class HttpTransport(Transport):
    def __init__(self, settings: OtlpSettings) -> None:
        self._settings = settings
        self._session = requests.Session()
        self._session.headers.update(dict(settings.headers))
        self._session.headers["Content-Type"] = "application/x-protobuf"
        self._session.headers["User-Agent"] = USER_AGENT
        if settings.gzip:
            self._session.headers["Content-Encoding"] = "gzip"
        if settings.certificate_file:
            self._session.verify = settings.certificate_file
        if settings.client_certificate_file and settings.client_key_file:
            self._session.cert = (settings.client_certificate_file, settings.client_key_file)

    def send(
        self, request: ExportMetricsServiceRequest | bytes, timeout_s: float, cancel: threading.Event | None = None
    ) -> SendResult:
        body = _as_bytes(request)
        if self._settings.gzip:
            body = gzip.compress(body, compresslevel=6)
        try:
            resp = self._session.post(self._settings.endpoint, data=body, timeout=timeout_s)
        except requests.RequestException as exc:
            return SendResult(False, error=f"HTTP {type(exc).__name__}")
        if resp.status_code // 100 != 2:
            return SendResult(False, error=f"HTTP {resp.status_code}")
        rejected = 0
        if resp.content:
            parsed = ExportMetricsServiceResponse()
            try:
                parsed.ParseFromString(resp.content)
                rejected = parsed.partial_success.rejected_data_points
            except Exception:  # a 2xx with an unparsable body still delivered the data
                rejected = 0
        return SendResult(True, rejected_points=rejected)

    def close(self) -> None:
        self._session.close()


def make_transport(settings: OtlpSettings) -> Transport:
    if settings.protocol is Protocol.HTTP_PROTOBUF:
        return HttpTransport(settings)
    return GrpcTransport(settings)
