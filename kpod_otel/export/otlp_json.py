"""OTLP/JSON: the encoding the Collector's file exporter writes (one request per line), for `snapshot
--format otlp-json` and OTEL_METRICS_EXPORTER=console."""

from __future__ import annotations

import threading
from collections.abc import Callable

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from kpod_otel.export.pipeline import CycleResult


def to_otlp_json(request: ExportMetricsServiceRequest) -> str:
    # OTLP/JSON: lowerCamelCase field names, enums as integers, 64-bit integers as strings.
    text: str = MessageToJson(request, use_integers_for_enums=True, indent=None)
    return text


class OtlpJsonPrinter:
    """CycleSink of OTEL_METRICS_EXPORTER=console: each cycle's request as one line of OTLP/JSON (the
    agent's logs go to stderr, so stdout carries only these lines)."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self._out = out

    def deliver(self, result: CycleResult, deadline_s: float, cancel: threading.Event | None = None) -> bool:
        self._out(to_otlp_json(result.request) + "\n")
        return True

    def close(self) -> None:
        pass
