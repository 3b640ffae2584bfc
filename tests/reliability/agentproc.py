"""Running `kpod-otel run` as a subprocess for the reliability tests: start, read RSS, stop, read stderr."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.export.helpers import attrs, by_resource


def rss_kib(pid: int) -> int:
    """VmRSS of a process, from /proc (the kernel's own accounting)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class AgentProcess:
    """The agent as a child process; stderr is drained in a thread so a chatty agent never blocks."""

    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def run(cls, config: Path, env: dict[str, str], *extra: str) -> AgentProcess:
        agent = cls([sys.executable, "-m", "kpod_otel", *extra, "run", "--config", str(config)], env)
        agent.proc = subprocess.Popen(agent.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
        agent._reader = threading.Thread(target=agent._drain, daemon=True)
        agent._reader.start()
        return agent

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        elapsed = time.monotonic() - t0
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code, elapsed

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait(timeout=10)


def agent_sum(request: ExportMetricsServiceRequest, name: str, **want: str) -> tuple[int, int]:
    """(value, start_time_unix_nano) of a cumulative self-metric point whose attributes include `want`."""
    metric = by_resource([request])["kpod-otel"][name]
    for dp in metric.sum.data_points:
        a = attrs(dp.attributes)
        if all(a.get(k) == v for k, v in want.items()):
            return int(dp.as_int or dp.as_double), int(dp.start_time_unix_nano)
    raise KeyError(f"{name} {want}")


def agent_gauge(request: ExportMetricsServiceRequest, name: str) -> float:
    dp = by_resource([request])["kpod-otel"][name].gauge.data_points[0]
    return float(dp.as_double or dp.as_int)
