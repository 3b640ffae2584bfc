"""OTLP/JSON: the encoding the Collector's file exporter writes (one request per line)."""

from __future__ import annotations

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest


def to_otlp_json(request: ExportMetricsServiceRequest) -> str:
    # OTLP/JSON: lowerCamelCase field names, enums as integers, 64-bit integers as strings.
    text: str = MessageToJson(request, use_integers_for_enums=True, indent=None)
    return text
