"""`kpod-otel run` as a subprocess, exactly as a user runs it, against a real OTLP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.export.helpers import by_resource
from tests.fakes.otlp import OtlpReceiver

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, interval_ms: int = 1000, extra: str = "") -> Path:
    # A local-discovery agent over an empty, prepared cgroup tree: no pods, only the agent's own metrics.
    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "cgroup.controllers").write_text("cpu io memory pids\n")  # a prepared (unmounted) v2 root
    (cg / "cgroup.procs").write_text("")
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    cfg = tmp_path / "kpod.yaml"
    cfg.write_text(
        "kpod:\n"
        "  profile: custom\n"
        f"  poll-interval: {interval_ms}\n"
        "  node-name: test-node\n"
        "  collectors:\n    disk: {enabled: true}\n"
        "  discovery:\n    mode: local\n"
        "  bpf:\n    enabled: false\n"
        f"  cgroup:\n    root: {cg}\n    proc-root: {proc}\n    sys-root: {tmp_path}\n"
        "  health:\n    port: 0\n" + extra
    )
    return cfg


def agent_env(receiver: OtlpReceiver, protocol: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_"))}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    return env


@pytest.mark.parametrize(("kind", "protocol"), [("grpc", "grpc"), ("http", "http/protobuf")])
def test_run_once_exports_the_agent_resource(tmp_path: Path, kind: str, protocol: str) -> None:
    receiver = OtlpReceiver().start(kind)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kpod_otel", "run", "--once", "--config", str(write_config(tmp_path))],
            env=agent_env(receiver, protocol), capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        got = by_resource([r.request for r in receiver.wait_for(1)])
        agent = got["kpod-otel"]
        assert agent["resource"]["service.name"] == "kpod-otel"
        assert agent["resource"]["k8s.node.name"] == "test-node"
        from kpod_otel import __version__

        assert agent["resource"]["service.version"] == __version__
        assert agent["kpod.agent.cycles"].sum.data_points[0].as_int == 1
    finally:
        receiver.stop()


def test_run_once_fails_when_the_export_fails(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start("grpc")
    receiver.behaviour.fail = True
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kpod_otel", "run", "--once", "--config", str(write_config(tmp_path))],
            env=agent_env(receiver, "grpc"), capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 1
    finally:
        receiver.stop()


def test_sigterm_final_export_and_exit_0(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start("grpc")
    # a long interval: the export after SIGTERM can only be the final one
    cfg = write_config(tmp_path, interval_ms=600_000)
    agent = subprocess.Popen([sys.executable, "-m", "kpod_otel", "run", "--config", str(cfg)],
                             env=agent_env(receiver, "grpc"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        receiver.wait_for(1, timeout=60)  # the first cycle runs at start
        time.sleep(0.5)
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err
        received = receiver.wait_for(2, timeout=5)
        assert len(received) == 2
        cycles = [by_resource([r.request])["kpod-otel"]["kpod.agent.cycles"].sum.data_points[0].as_int
                  for r in received]
        assert cycles == [1, 2]
        assert "final export" in err
    finally:
        if agent.poll() is None:
            agent.kill()
        receiver.stop()


def test_sigterm_during_a_hanging_export_ends_quickly_with_a_final_attempt(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start("grpc")
    receiver.behaviour.hang.set()  # every export hangs: accepted, never answered
    # export deadline = min(OTEL_METRIC_EXPORT_TIMEOUT, 90% of the interval) = 18 s without cancellation
    cfg = write_config(tmp_path, interval_ms=20000)
    env = agent_env(receiver, "grpc")
    env["OTEL_METRIC_EXPORT_TIMEOUT"] = "60000"
    agent = subprocess.Popen([sys.executable, "-m", "kpod_otel", "run", "--config", str(cfg)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while receiver.arrivals < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.arrivals == 1  # the first export is in flight
        time.sleep(0.5)
        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=40)
        elapsed = time.monotonic() - t0
        assert agent.returncode == 0, err
        assert receiver.arrivals == 2  # the final export was attempted
        # the hanging export is cancelled at once; then the final export's own 5 s deadline
        assert elapsed < 5 + 3, elapsed
    finally:
        if agent.poll() is None:
            agent.kill()
        receiver.stop()


def test_health_endpoints_follow_the_collection_loop(tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    from tests.fakes.otlp import free_port

    receiver = OtlpReceiver().start("grpc")
    receiver.behaviour.hang.set()  # the first cycle's export hangs: the agent is alive but not ready yet
    port = free_port()
    cfg = write_config(tmp_path, interval_ms=20000).read_text().replace("    port: 0", f"    port: {port}")
    (tmp_path / "health.yaml").write_text(cfg.replace("health:\n", "health:\n    address: 127.0.0.1\n"))

    def get(path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    agent = subprocess.Popen([sys.executable, "-m", "kpod_otel", "run", "--config", str(tmp_path / "health.yaml")],
                             env=agent_env(receiver, "grpc"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 30
        while receiver.arrivals < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get("/healthz")[0] == 200
        code, body = get("/readyz")
        assert code == 503 and body["cycles"] == 0
        receiver.behaviour.release.set()  # the export completes: the first cycle is done
        deadline = time.monotonic() + 30
        while get("/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        code, body = get("/readyz")
        assert code == 200 and body["cycles"] == 1
        assert "token" not in json.dumps(body).lower() and "endpoint" not in json.dumps(body).lower()
    finally:
        agent.terminate()
        agent.communicate(timeout=30)
        receiver.stop()
