"""Real BPF in the real kernel: collectors loaded once per session, v2 cgroups and workloads per test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kpod_otel.assembly import bpf_environment, cgroup_fs
from kpod_otel.bpf.program import BpfEnvironment
from kpod_otel.collector import CollectorSnapshot, HistogramPoint
from kpod_otel.collectors.cpu_sched import CpuSchedCollector
from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
from kpod_otel.collectors.syscall import SyscallCollector
from kpod_otel.collectors.tcp import TcpCollector
from kpod_otel.config import BpfConfig, CgroupConfig, Config, DiscoveryConfig, DiscoveryMode, Profile
from kpod_otel.model import ContainerTarget, Target
from kpod_otel.selfmetrics import AgentStats
from tests.conftest import HOST, host_needs_v2, require_bcc

V2_ROOT = Path(HOST.v2_dir or "/sys/fs/cgroup/unified")  # /sys/fs/cgroup on a pure v2 host
REPO = Path(__file__).resolve().parents[2]
PREFIX = "kpt-bpf-"


def bpf_env_of(config: Config) -> BpfEnvironment:
    """The eBPF environment the agent would resolve from `config` on this machine."""
    return bpf_environment(config, cgroup_fs(config))


def bpf_config(**bpf: object) -> Config:
    # Local mode: the cgroup programs attach at the v2 root, where the tests' cgroups are, whether or not
    # a kubepods cgroup exists on this machine (test_tcp covers attaching below a pods cgroup).
    return Config(
        profile=Profile.COMPREHENSIVE,
        discovery=DiscoveryConfig(mode=DiscoveryMode.LOCAL),
        cgroup=CgroupConfig(root="/sys/fs/cgroup"),
        bpf=BpfConfig(**{"program_dir": str(REPO / "ebpf"), **bpf}),  # type: ignore[arg-type]
    )


@dataclass
class Cgroup:
    """A real cgroup directory (v2 under /sys/fs/cgroup/unified, or a v1 controller's)."""

    path: Path

    @property
    def id(self) -> int:
        return os.stat(self.path).st_ino

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


@dataclass
class CgroupFactory:
    made: list[Cgroup] = field(default_factory=list)

    def make(self, label: str, hierarchy: Path = V2_ROOT) -> Cgroup:
        path = hierarchy / f"{PREFIX}{label}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        cg = Cgroup(path)
        self.made.append(cg)
        return cg

    def cleanup(self) -> None:
        for cg in reversed(self.made):
            cg.remove()


@pytest.fixture
def cgroups() -> Iterator[CgroupFactory]:
    require_bcc()
    host_needs_v2()  # eBPF attribution is by cgroup2 id: a pure v1 host has none
    factory = CgroupFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


def target_for(label: str, cg: Cgroup) -> Target:
    return Target(
        key=f"pod-{label}",
        resource={"k8s.pod.name": label},
        containers=(ContainerTarget(name=f"c-{label}", container_id=f"id-{label}", cgroup_path=cg.path.name,
                                    cgroup_id=cg.id),),
    )


class Workload:
    """A Python child that waits on stdin before and after each round of work, so it can be moved into
    cgroups while blocked and measured while blocked (its counters in /proc are then stable)."""

    def __init__(self, code: str, *args: str, netns: str = "") -> None:
        body = "\n".join("    " + line for line in code.strip().splitlines())
        prog = (
            "import sys, os\n"
            "while sys.stdin.readline() == 'go\\n':\n"
            f"{body}\n"
            "    sys.stdout.write('done\\n'); sys.stdout.flush()\n"
        )
        prefix = ["ip", "netns", "exec", netns] if netns else []  # ip execs the command: same pid
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", prog, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        wait_blocked(self.pid)

    def start(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 60) -> None:
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        assert line == "done\n", f"workload failed: {line!r}"
        wait_blocked(self.pid)

    def run(self, timeout: float = 60) -> None:
        self.start()
        self.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def wait_blocked(pid: int) -> None:
    """Until every thread of pid sleeps (S state), i.e. it is parked on its stdin read."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            states.append(stat.rsplit(")", 1)[1].split()[0])
        if states and all(s == "S" for s in states):
            time.sleep(0.05)  # the read has entered the kernel
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not block")


def ctx_switches_of(pid: int, kinds: tuple[str, ...] = ("voluntary", "nonvoluntary")) -> int:
    """Context switches of all threads of pid, from /proc/<pid>/task/<tid>/status."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
            name, _, val = line.partition(":")
            if name.removesuffix("_ctxt_switches") in kinds and name.endswith("_ctxt_switches"):
                total += int(val)
    return total


def schedstat_of(pid: int) -> tuple[int, int]:
    """(run_delay ns, switch-ins) of all threads of pid: the scheduler's own run-queue wait accounting
    (/proc/<pid>/task/<tid>/schedstat: on-CPU time, run-queue wait, timeslices run)."""
    delay = arrivals = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        delay += int(fields[1])
        arrivals += int(fields[2])
    return delay, arrivals


def value(snap: CollectorSnapshot, target: Target, metric: str, **attrs: object) -> int | float:
    """Sum of the points of one metric of one target whose attributes include `attrs`."""
    obs = snap.points.get(target.key, {}).get(metric, [])
    return sum(o.value for o in obs if all(o.attributes.get(k) == v for k, v in attrs.items()))


def histogram(snap: CollectorSnapshot, target: Target, metric: str) -> HistogramPoint | None:
    points = [p for p in snap.histograms.get(target.key, []) if p.name == metric]
    assert len(points) <= 1
    return points[0] if points else None


@pytest.fixture(scope="session")
def stats() -> AgentStats:
    return AgentStats()


@pytest.fixture(scope="session")
def bpf_env() -> BpfEnvironment:
    require_bcc()
    host_needs_v2()
    env = bpf_env_of(bpf_config())
    assert not env.unavailable, env.unavailable
    return env


@pytest.fixture(scope="session")
def cpu_collector(bpf_env: BpfEnvironment, stats: AgentStats) -> Iterator[CpuSchedCollector]:
    c = CpuSchedCollector(stats, bpf_env)
    assert c.available, c.unavailable_reason
    yield c
    c.close()


@pytest.fixture(scope="session")
def tcp_collector(bpf_env: BpfEnvironment, stats: AgentStats) -> Iterator[TcpCollector]:
    c = TcpCollector(stats, bpf_env)
    assert c.available, c.unavailable_reason
    yield c
    c.close()


@pytest.fixture(scope="session")
def mem_collector(bpf_env: BpfEnvironment, stats: AgentStats) -> Iterator[MemoryBpfCollector]:
    c = MemoryBpfCollector(stats, bpf_env)
    assert c.available, c.unavailable_reason
    yield c
    c.close()


@pytest.fixture(scope="session")
def syscall_collector(bpf_env: BpfEnvironment, stats: AgentStats) -> Iterator[SyscallCollector]:
    c = SyscallCollector(stats, bpf_env)
    assert c.available, c.unavailable_reason
    assert c.latency_enabled
    yield c
    c.close()
