"""Liveness and readiness endpoints for the kubelet's probes.

`/healthz` answers 200 while the collection loop is alive: the last cycle finished (or, before the first
one, the agent started) less than `stale_after` ago — by default three poll intervals, so one slow cycle or
one export hitting its timeout does not get the pod restarted, but a hung loop does. `/readyz` answers 200
once the first cycle has finished. Anything else is 404.

The server reads a `HealthSource`: either a `HealthState`, which the agent loop updates with
`cycle_finished()` after every cycle, or a `CallbackHealth` around whatever state the loop already keeps
(`alive()`/`ready()` callables). Responses carry the status and loop timing only: never configuration,
paths or credentials.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from kpod_otel.config import HealthConfig

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 3.0


@dataclass(frozen=True, slots=True)
class HealthStatus:
    alive: bool
    ready: bool
    cycles: int | None = None
    seconds_since_progress: float | None = None  # since the last finished cycle (or start), if known


class HealthSource(Protocol):
    def status(self) -> HealthStatus: ...


class HealthState:
    """What the loop reports and the probes read. Thread-safe; `clock` is monotonic seconds."""

    def __init__(
        self,
        poll_interval_s: float,
        stale_after_intervals: float = STALE_AFTER_INTERVALS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval_s <= 0 or stale_after_intervals <= 0:
            raise ValueError("poll interval and stale_after_intervals must be positive")
        self._clock = clock
        self._stale_after = poll_interval_s * stale_after_intervals
        self._lock = threading.Lock()
        self._started = clock()
        self._last_cycle: float | None = None
        self._cycles = 0

    @property
    def stale_after(self) -> float:
        return self._stale_after

    def cycle_finished(self) -> None:
        """Called by the agent loop after each collection+export cycle, whatever its outcome."""
        now = self._clock()
        with self._lock:
            self._last_cycle = now
            self._cycles += 1

    def status(self) -> HealthStatus:
        now = self._clock()
        with self._lock:
            since = now - (self._last_cycle if self._last_cycle is not None else self._started)
            return HealthStatus(
                alive=since <= self._stale_after,
                ready=self._cycles > 0,
                cycles=self._cycles,
                seconds_since_progress=max(since, 0.0),
            )


class _Handler(BaseHTTPRequestHandler):
    server: _HealthHTTPServer
    server_version = "kpod-otel"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/healthz", "/readyz"):
            self._send(HTTPStatus.NOT_FOUND, {"status": "not found"}, body)
            return
        try:
            st = self.server.source.status()
        except Exception:  # a probe must answer, and say "unhealthy" rather than hang or reset
            log.exception("health status failed")
            st = HealthStatus(alive=False, ready=False)
        ok = st.alive if path == "/healthz" else st.ready
        if ok:
            reason = "ok"
        elif path == "/readyz":
            reason = "first collection cycle not finished"
        elif st.seconds_since_progress is not None:
            reason = f"no finished cycle for {st.seconds_since_progress:.1f}s"
        else:
            reason = "collection loop stalled"
        payload: dict[str, object] = {"status": reason}
        if st.cycles is not None:
            payload["cycles"] = st.cycles
        if st.seconds_since_progress is not None:
            payload["seconds_since_progress"] = round(st.seconds_since_progress, 3)
        self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, payload, body)

    def _send(self, code: HTTPStatus, payload: dict[str, object], body: bool) -> None:
        data = (json.dumps(payload) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # Probes hit this every few seconds: keep them out of the agent's log unless debugging.
        log.debug("health %s %s", self.address_string(), format % args)


class _HealthHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], source: HealthSource) -> None:
        self.source = source
        super().__init__(address, _Handler)


class HealthServer:
    """HTTP server for `/healthz` and `/readyz` in a background thread.

    `port` is taken literally (0 lets the OS choose, for tests; see `port` after `start()`). Whether the
    endpoints are enabled at all is `start_health_server`'s decision.
    """

    def __init__(self, source: HealthSource, address: str = "0.0.0.0", port: int = 8080) -> None:
        self._source = source
        self._address = address
        self._requested_port = port
        self._server: _HealthHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("health server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = _HealthHTTPServer((self._address, self._requested_port), self._source)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="kpod-health", daemon=True
        )
        self._thread.start()
        log.info("health endpoints /healthz and /readyz on %s:%d", self._address, self.port)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)


def start_health_server(config: HealthConfig, source: HealthSource) -> HealthServer | None:
    """Start the endpoints as configured (`health.port`, `health.address`); port 0 disables them."""
    if config.port == 0:
        log.info("health endpoints disabled (health.port: 0)")
        return None
    server = HealthServer(source, config.address, config.port)
    server.start()
    return server
