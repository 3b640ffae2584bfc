"""The OTLP receiver goes away for 5 cycles and comes back, or hangs: the agent runs as a subprocess,
exactly as deployed. Truth: what the receiver got on the wire, the agent's stderr, /proc/<pid>/status."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.export.helpers import attrs, by_resource
from tests.fakes.otlp import OtlpReceiver
from tests.reliability.agentproc import AgentProcess, agent_gauge, agent_sum, rss_kib
from tests.test_agent_run import agent_env, write_config

INTERVAL_S = 1.0
FAILURE = {"kpod.export.result": "failure"}


def failure_count(request: ExportMetricsServiceRequest) -> int:
    """kpod.agent.exports{result=failure} in one request, 0 while there has been none."""
    exports = by_resource([request])["kpod-otel"].get("kpod.agent.exports")
    if exports is None:
        return 0
    return sum(int(dp.as_int) for dp in exports.sum.data_points
               if attrs(dp.attributes).get("kpod.export.result") == "failure")


def wait(pred: object, timeout: float, step: float = 0.05) -> bool:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


@pytest.mark.parametrize(("kind", "protocol"), [("grpc", "grpc"), ("http", "http/protobuf")])
def test_outage_of_five_cycles(tmp_path: Path, kind: str, protocol: str) -> None:
    receiver = OtlpReceiver().start(kind)
    cfg = write_config(tmp_path, interval_ms=int(INTERVAL_S * 1000))
    agent = AgentProcess.run(cfg, agent_env(receiver, protocol))
    try:
        before = receiver.wait_for(3, timeout=60)  # warmed up: imports done, a few cycles exported
        rss_start = rss_kib(agent.pid)
        last_before = receiver.received[-1].request
        cycles_before, start_time = agent_sum(last_before, "kpod.agent.cycles")
        receiver.stop()
        t_down = time.monotonic()
        time.sleep(5 * INTERVAL_S + 0.5)  # five cycles export into nothing
        assert agent.alive(), agent.stderr()
        n_received = len(receiver.received)
        receiver.restart()
        got = receiver.wait_for(n_received + 1, timeout=30)
        outage_s = time.monotonic() - t_down
        first_after = got[n_received].request
        time.sleep(2 * INTERVAL_S)
        rss_end = rss_kib(agent.pid)
        code, _ = agent.terminate()
        assert code == 0, agent.stderr()

        # the failed exports are counted, and the counter arrives with the first export after recovery
        failures, _ = agent_sum(first_after, "kpod.agent.exports", **FAILURE)
        assert failures >= 5
        assert failures <= outage_s / INTERVAL_S + 1
        errors, _ = agent_sum(first_after, "kpod.agent.errors",
                              **{"kpod.component": "exporter", "error.type": "export"})
        assert errors == failures
        # cumulative totals continue: same start time, no reset, monotonic across the outage
        cycles_after, start_after = agent_sum(first_after, "kpod.agent.cycles")
        assert start_after == start_time
        assert cycles_after >= cycles_before + 5 + 1
        series = [agent_sum(r.request, "kpod.agent.cycles")[0] for r in receiver.received]
        assert series == sorted(series) and len(set(series)) == len(series), series
        assert len(before) >= 3
        # one warning when the outage starts, one when it ends: not one per cycle
        text = agent.stderr()
        assert text.count("WARNING kpod_otel.export.exporter: export to") == 2, text
        assert sum("failed" in line and "export to" in line for line in agent.lines) == 1
        assert sum("recovered after" in line for line in agent.lines) == 1
        # memory stays bounded through the outage (nothing queued up per failed cycle)
        assert rss_end - rss_start < 10 * 1024, (rss_start, rss_end)
    finally:
        agent.kill()
        receiver.stop()


def test_hanging_receiver_does_not_stall_the_cycle(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start("http")  # a thread per request: every hung request is seen
    interval = 2.0
    cfg = write_config(tmp_path, interval_ms=int(interval * 1000))
    env = agent_env(receiver, "http/protobuf")
    env["OTEL_METRIC_EXPORT_TIMEOUT"] = "1000"  # deadline = min(1 s, 90% of the interval) = 1 s
    agent = AgentProcess.run(cfg, env)
    try:
        receiver.wait_for(1, timeout=60)
        receiver.behaviour.hang.set()  # accept every request, never answer (the fake would hold 60 s)
        a0 = receiver.arrivals
        time.sleep(4 * interval)
        hung = receiver.arrivals - a0
        # a loop stalled by the receiver would have sent one request; bounded by the deadline it keeps
        # its rhythm of one export per interval
        assert hung >= 3, hung
        assert agent.alive()
        receiver.behaviour.hang.clear()
        receiver.behaviour.release.set()
        # released, the fake records the hung requests too (their client gave up long ago); then the
        # agent's next exports succeed
        n = len(receiver.received)
        got = receiver.wait_for(n + hung + 2, timeout=20)
        # every cycle during the hang took about the export deadline (1 s), not the receiver's 60 s
        durations = [agent_gauge(r.request, "kpod.agent.cycle.duration") for r in got
                     if "kpod.agent.cycle.duration" in by_resource([r.request])["kpod-otel"]]
        assert len(durations) >= hung
        assert max(durations) < 1.0 + 0.5, durations
        failures = max(failure_count(r.request) for r in got)
        assert failures >= hung - 1
        # one warning for the whole hang, one for the recovery
        assert sum("export to" in line and "failed (" in line for line in agent.lines) == 1, agent.stderr()
        assert wait(lambda: sum("recovered after" in line for line in agent.lines) == 1, 5), agent.stderr()
        code, _ = agent.terminate()
        assert code == 0
    finally:
        agent.kill()
        receiver.stop()
