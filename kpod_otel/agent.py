"""The collection loop: every interval, targets -> collectors -> one OTLP export (and/or a console table).

Shutdown (SIGTERM from Kubernetes, SIGINT) sets an event; the loop wakes at once, runs one final
cycle so the last values are exported, closes everything (BPF programs are detached by the collectors'
close()) and returns 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from kpod_otel.export.pipeline import CycleResult, MetricsPipeline
from kpod_otel.health import HealthState
from kpod_otel.model import Target
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

# Kubernetes gives 30 s by default between SIGTERM and SIGKILL; the final export must fit well within.
FINAL_EXPORT_TIMEOUT_S = 5.0


class TargetSource(Protocol):
    """Discovery + cgroup resolution: the targets to measure this cycle."""

    def start(self) -> None: ...

    def targets(self) -> list[Target]: ...

    def stop(self) -> None: ...


class CycleSink(Protocol):
    """Where a cycle's data goes: the OTLP exporter, a console table."""

    def deliver(self, result: CycleResult, deadline_s: float, cancel: threading.Event | None = None) -> bool: ...

    def close(self) -> None: ...


class Agent:
    def __init__(
        self,
        source: TargetSource,
        pipeline: MetricsPipeline,
        sinks: Sequence[CycleSink],
        stats: AgentStats,
        interval_s: float,
        export_timeout_s: float,
    ) -> None:
        self._source = source
        self._pipeline = pipeline
        self._sinks = list(sinks)
        self._stats = stats
        self.interval_s = interval_s
        self.health = HealthState(interval_s)  # read by the /healthz and /readyz endpoints
        self._export_timeout_s = export_timeout_s
        self._last_targets: list[Target] = []

    def start(self) -> None:
        self._source.start()

    def run_cycle(self, cancel: threading.Event | None = None, deadline_s: float | None = None) -> bool:
        """One collection and delivery; True if every sink succeeded. `cancel` (the shutdown event) cuts
        a running export short; `deadline_s` overrides the export deadline (the final export's)."""
        t0 = time.monotonic()
        try:
            targets = self._source.targets()
            self._last_targets = targets
        except Exception:
            # The pods did not go away because we could not look: measure the last known ones, so
            # their series neither end nor restart.
            log.exception("discovery failed this cycle; measuring the pods of the last cycle")
            self._stats.error("discovery", "targets")
            targets = self._last_targets
        self._stats.add("kpod.agent.cycles")
        result = self._pipeline.collect(targets)
        self._stats.set("kpod.agent.export.points", result.points)
        # A hanging receiver must not stall the loop beyond one interval.
        deadline = min(self._export_timeout_s, max(1.0, self.interval_s * 0.9))
        if deadline_s is not None:
            deadline = min(deadline, deadline_s)
        ok = True
        for sink in self._sinks:
            try:
                ok = sink.deliver(result, deadline, cancel) and ok
            except Exception:
                log.exception("delivering the cycle's data failed")
                self._stats.error("exporter", "deliver")
                ok = False
        self._stats.set("kpod.agent.cycle.duration", time.monotonic() - t0)
        self.health.cycle_finished()
        return ok

    def run(self, stop: threading.Event) -> int:
        """Cycle every interval until `stop` is set, then one final cycle. Returns the exit code."""
        interval = self.interval_s
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                self.run_cycle(cancel=stop)
                next_at += interval
                now = time.monotonic()
                if next_at < now:  # a cycle overran: skip the missed slots instead of bunching up
                    missed = int((now - next_at) // interval) + 1
                    next_at += missed * interval
                stop.wait(max(0.0, next_at - now))
            log.info("shutting down: final export")
            self.run_cycle(deadline_s=FINAL_EXPORT_TIMEOUT_S)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        try:
            self._source.stop()
        except Exception:
            log.exception("stopping discovery failed")
        self._pipeline.close()
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing a sink failed")
