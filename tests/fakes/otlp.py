"""A real OTLP metrics receiver for tests: the gRPC MetricsService from opentelemetry-proto and an
HTTP/protobuf `/v1/metrics` handler, both on loopback. It records every request it accepts and can be
told to fail (UNAVAILABLE / 503), to hang (accept and never answer), or to go away and come back."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as svc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    request: ExportMetricsServiceRequest
    protocol: str
    compressed: bool
    headers: dict[str, str]
    wire_bytes: int
    at: float = field(default_factory=time.monotonic)


class _Behaviour:
    def __init__(self) -> None:
        self.fail = False
        self.hang = threading.Event()  # set: hang every request until released
        self.release = threading.Event()


class OtlpReceiver:
    """Start with `start("grpc")` or `start("http")`; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.arrivals = 0  # requests that reached a handler, answered or not (hang mode)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.behaviour = _Behaviour()
        self.port = free_port()
        self.protocol = ""
        self._grpc: grpc.Server | None = None
        self._http: http.server.ThreadingHTTPServer | None = None
        self._http_conns: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, item: Received) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self.received.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"received {len(self.received)} requests, wanted {count}")
                self._cond.wait(left)
            return list(self.received)

    # --- gRPC -------------------------------------------------------------------------------------
    def _start_grpc(self) -> None:
        receiver = self

        class Servicer(svc.MetricsServiceServicer):
            def Export(self, request: ExportMetricsServiceRequest, context: Any) -> ExportMetricsServiceResponse:
                md = {k: v for k, v in context.invocation_metadata()}
                with receiver._cond:
                    receiver.arrivals += 1
                if receiver.behaviour.hang.is_set():
                    receiver.behaviour.release.wait(60)
                if receiver.behaviour.fail:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "test receiver told to fail")
                # gRPC hides the message encoding from handlers: see ByteCountingProxy for gzip checks.
                receiver._record(Received(request, "grpc", False, md, request.ByteSize()))
                return ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        svc.add_MetricsServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._grpc = server

    # --- HTTP -------------------------------------------------------------------------------------
    def _start_http(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver._lock:  # so stop() can cut keep-alive connections, as a dying process does
                    receiver._http_conns.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._http_conns.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._cond:
                    receiver.arrivals += 1
                if receiver.behaviour.hang.is_set():
                    receiver.behaviour.release.wait(60)
                if self.path != "/v1/metrics":
                    self._reply(404, b"")
                    return
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self._reply(415, b"")
                    return
                if receiver.behaviour.fail:
                    self._reply(503, b"")
                    return
                compressed = self.headers.get("Content-Encoding") == "gzip"
                raw = gzip.decompress(body) if compressed else body
                request = ExportMetricsServiceRequest()
                request.ParseFromString(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(Received(request, "http", compressed, headers, len(body)))
                self._reply(200, ExportMetricsServiceResponse().SerializeToString())

            def _reply(self, code: int, payload: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._http = server

    def start(self, protocol: str) -> OtlpReceiver:
        self.protocol = protocol
        if protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()
        return self

    def stop(self) -> None:
        self.behaviour.release.set()
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
            with self._lock:
                conns = list(self._http_conns)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        self.stop()
        self.behaviour.release.clear()
        self.start(self.protocol)


class ByteCountingProxy:
    """A loopback TCP proxy that counts the bytes clients send: proof of compression on the wire."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self.client_bytes = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(16)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.client_bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._sock.close()
