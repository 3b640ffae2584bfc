"""The probe endpoints, over real HTTP on loopback, against a state the test drives."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from kpod_otel.config import HealthConfig, parse_config
from kpod_otel.health import HealthServer, HealthState, HealthStatus, start_health_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def served(clock: FakeClock) -> Iterator[tuple[HealthState, int]]:
    state = HealthState(poll_interval_s=15.0, clock=clock)
    server = HealthServer(state, "127.0.0.1", 0)
    server.start()
    try:
        yield state, server.port
    finally:
        server.stop()


def test_before_first_cycle_alive_but_not_ready(served: tuple[HealthState, int], clock: FakeClock) -> None:
    _, port = served
    clock.now += 10
    code, headers, body = get(port, "/healthz")
    assert code == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "cycles": 0, "seconds_since_progress": 10.0}
    code, _, body = get(port, "/readyz")
    assert code == 503
    assert json.loads(body)["status"] == "first collection cycle not finished"


def test_ready_after_first_cycle_and_stale_after_three_intervals(
    served: tuple[HealthState, int], clock: FakeClock
) -> None:
    state, port = served
    clock.now += 20
    state.cycle_finished()
    assert get(port, "/readyz")[0] == 200
    clock.now += 45  # exactly 3 x 15 s since the last cycle: still alive
    code, _, body = get(port, "/healthz")
    assert (code, json.loads(body)["cycles"]) == (200, 1)
    clock.now += 0.5
    code, _, body = get(port, "/healthz")
    assert code == 503
    assert json.loads(body) == {
        "status": "no finished cycle for 45.5s", "cycles": 1, "seconds_since_progress": 45.5,
    }
    assert get(port, "/readyz")[0] == 200  # ready stays true: a hung loop is liveness's business
    state.cycle_finished()
    assert get(port, "/healthz")[0] == 200


def test_loop_that_never_finishes_a_cycle_turns_unhealthy(
    served: tuple[HealthState, int], clock: FakeClock
) -> None:
    _, port = served
    clock.now += 46
    assert get(port, "/healthz")[0] == 503
    assert get(port, "/readyz")[0] == 503


def test_other_paths_methods_and_head(served: tuple[HealthState, int]) -> None:
    state, port = served
    state.cycle_finished()
    assert get(port, "/")[0] == 404
    assert get(port, "/metrics")[0] == 404
    assert get(port, "/healthz/../config")[0] == 404
    assert get(port, "/readyz?verbose=1")[0] == 200
    code, headers, body = get(port, "/healthz", "HEAD")
    assert (code, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    assert get(port, "/healthz", "POST")[0] == 501


def test_body_never_shows_configuration(served: tuple[HealthState, int]) -> None:
    state, port = served
    state.cycle_finished()
    for path in ("/healthz", "/readyz", "/nope"):
        _, _, body = get(port, path)
        assert set(json.loads(body)) <= {"status", "cycles", "seconds_since_progress"}


def test_real_clock_goes_stale_and_recovers() -> None:
    state = HealthState(poll_interval_s=0.1)  # stale after 0.3 s of real time
    server = HealthServer(state, "127.0.0.1", 0)
    server.start()
    try:
        state.cycle_finished()
        assert get(server.port, "/healthz")[0] == 200
        time.sleep(0.4)
        assert get(server.port, "/healthz")[0] == 503
        state.cycle_finished()
        assert get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True)
    return bool(out.stdout.strip())


def test_configured_port_listens_and_stop_releases_it() -> None:
    port = free_port()
    cfg = parse_config(f"kpod:\n  health:\n    port: {port}\n    address: 127.0.0.1\n", env={})
    server = start_health_server(cfg.health, HealthState(15.0))
    assert server is not None
    try:
        assert listening(port)  # the kernel's socket table, not our own view
        assert server.port == port
        assert get(port, "/healthz")[0] == 200
    finally:
        server.stop()
    assert not listening(port)


def test_port_zero_disables() -> None:
    cfg = parse_config("kpod:\n  health:\n    port: 0\n", env={})
    assert cfg.health == HealthConfig(port=0, address="0.0.0.0")
    assert start_health_server(cfg.health, HealthState(15.0)) is None


def test_a_failing_source_answers_unhealthy() -> None:
    class Broken:
        def status(self) -> HealthStatus:
            raise RuntimeError("state unavailable")

    server = HealthServer(Broken(), "127.0.0.1", 0)
    server.start()
    try:
        assert get(server.port, "/healthz")[0] == 503
        assert get(server.port, "/readyz")[0] == 503
    finally:
        server.stop()
