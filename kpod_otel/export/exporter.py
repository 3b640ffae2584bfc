"""One OTLP export per cycle, split into requests that stay under the receiver's limits.

The Collector's gRPC receiver rejects messages over 4 MiB by default. A request is cut between
ResourceMetrics (one pod's points are never split across requests) once it holds `max_points` points or
`max_bytes` bytes. An outage is logged once when it starts and once when it ends, not every cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics

from kpod_otel.export.encoder import EncodedResource, join_request
from kpod_otel.export.otlp_settings import OtlpSettings
from kpod_otel.export.pipeline import CycleResult
from kpod_otel.export.transport import Transport, make_transport
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 50000
DEFAULT_MAX_BYTES = 3 * 1024 * 1024


def resource_points(rm: ResourceMetrics) -> int:
    total = 0
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            kind = m.WhichOneof("data")
            if kind:
                total += len(getattr(m, kind).data_points)
    return total


def split_request(
    request: ExportMetricsServiceRequest, max_points: int, max_bytes: int
) -> Iterator[ExportMetricsServiceRequest]:
    batch = ExportMetricsServiceRequest()
    points = size = 0
    for rm in request.resource_metrics:
        n, b = resource_points(rm), rm.ByteSize()
        if batch.resource_metrics and (points + n > max_points or size + b > max_bytes):
            yield batch
            batch = ExportMetricsServiceRequest()
            points = size = 0
        batch.resource_metrics.append(rm)
        points += n
        size += b
    if batch.resource_metrics:
        yield batch


def split_encoded(
    resources: Sequence[EncodedResource], max_points: int, max_bytes: int
) -> Iterator[bytes]:
    """split_request for a request that is already serialized, one ResourceMetrics at a time: the same
    cuts, without parsing or copying messages. Yields serialized requests."""
    batch: list[EncodedResource] = []
    points = size = 0
    for rm in resources:
        if batch and (points + rm.points > max_points or size + rm.size > max_bytes):
            yield join_request(batch)
            batch = []
            points = size = 0
        batch.append(rm)
        points += rm.points
        size += rm.size
    if batch:
        yield join_request(batch)


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    ok: bool
    requests: int
    seconds: float


class OtlpExporter:
    def __init__(
        self,
        settings: OtlpSettings,
        stats: AgentStats,
        transport: Transport | None = None,
        max_points: int = DEFAULT_MAX_POINTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.settings = settings
        self._stats = stats
        self._transport = transport or make_transport(settings)
        self._max_points = max_points
        self._max_bytes = max_bytes
        self._failing_since: float | None = None
        self._warned_rejections = False

    def export(
        self,
        request: ExportMetricsServiceRequest,
        deadline_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> ExportOutcome:
        """Send the cycle's data; never raises. `deadline_s` caps the whole export (all requests);
        `cancel` (the shutdown event) abandons it early."""
        return self._export(split_request(request, self._max_points, self._max_bytes), deadline_s, cancel)

    def export_encoded(
        self,
        resources: Sequence[EncodedResource],
        deadline_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> ExportOutcome:
        """`export` for a request the pipeline already serialized (CycleResult.resources)."""
        return self._export(split_encoded(resources, self._max_points, self._max_bytes), deadline_s, cancel)

    def _export(
        self,
        parts: Iterable[ExportMetricsServiceRequest | bytes],
        deadline_s: float | None,
        cancel: threading.Event | None,
    ) -> ExportOutcome:
        started = time.monotonic()
        budget = self.settings.timeout_s if deadline_s is None else min(deadline_s, self.settings.timeout_s)
        ok, sent, error = True, 0, ""
        for part in parts:
            remaining = budget - (time.monotonic() - started)
            if remaining <= 0:
                ok, error = False, "export deadline exceeded"
                break
            result = self._transport.send(part, remaining, cancel)
            sent += 1
            if not result.ok:
                ok, error = False, result.error
                break
            if result.rejected_points:
                self._stats.error("exporter", "rejected_points", result.rejected_points)
                if not self._warned_rejections:
                    self._warned_rejections = True
                    log.warning("the receiver rejected %d data points (partial success)", result.rejected_points)
        # An export cut short by shutdown says nothing about the receiver: neither an outage to log nor
        # a failure to count (the final export follows at once).
        cancelled = not ok and cancel is not None and cancel.is_set()
        outcome = "success" if ok else "cancelled" if cancelled else "failure"
        self._stats.add("kpod.agent.exports", 1, **{"kpod.export.result": outcome})
        if cancelled:
            log.info("export to %s cancelled by shutdown (%s)", self.settings.endpoint, error)
        else:
            self._note_outcome(ok, error)
        return ExportOutcome(ok, sent, time.monotonic() - started)

    def _note_outcome(self, ok: bool, error: str) -> None:
        if ok:
            if self._failing_since is not None:
                log.warning("export to %s recovered after %.0f s",
                            self.settings.endpoint, time.monotonic() - self._failing_since)
                self._failing_since = None
            return
        self._stats.error("exporter", "export")
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("export to %s failed (%s); will keep trying every cycle and log again on recovery",
                        self.settings.endpoint, error)

    def close(self) -> None:
        self._transport.close()

    def deliver(self, result: CycleResult, deadline_s: float, cancel: threading.Event | None = None) -> bool:
        """CycleSink: export the cycle's request."""
        return self.export_encoded(result.resources, deadline_s, cancel).ok
