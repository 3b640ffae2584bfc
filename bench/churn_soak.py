"""Churn soak: pod lifecycles through the fake API server with real cgroups created and removed, against
`kpod-otel run` as a subprocess with its eBPF programs loaded. Run as root from the repository root:

    .venv/bin/python -m bench.churn_soak [--lifecycles 10000] [--batch 50] [--interval-ms 1000]

Each round creates `batch` pods (systemd-driver cgroups in every hierarchy, a process per container that
does a little work so the BPF maps get entries for its cgroup, then the pod announced by the API server),
waits for an export that carries all of them, then deletes them from the API and removes their processes
and cgroups. It checks, from what the receiver got and from the kernel:
- no stale Resource: no export made more than 3 intervals after a pod's deletion carries it;
- BPF map entries of removed cgroups are gone (bpftool map dump of the agent's per-cgroup maps);
- the agent's RSS growth from a tenth of the rounds (start-up compiles done) to the end (VmRSS);
- no `otel.metric.overflow` attribute anywhere.
`tests/reliability/test_churn_soak.py` runs it at reduced scale in CI; docs/reliability.md has the full run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.reliability.agentproc import AgentProcess, rss_kib
from tests.reliability.node import FakeNode, bpf_ids_of

OVERFLOW_KEY = "otel.metric.overflow"


@dataclass
class SoakResult:
    lifecycles: int = 0
    rounds: int = 0
    seconds: float = 0.0
    exports: int = 0
    rss_after_first_round_kib: int = 0
    rss_warm_kib: int = 0  # after a tenth of the rounds: start-up (BPF compiles) is over, caches are warm
    rss_end_kib: int = 0
    rss_max_kib: int = 0
    stale_resources: list[str] = field(default_factory=list)  # uids seen too long after deletion
    missing_pods: int = 0  # pods never seen in an export before their deletion
    bpf_keys_of_live_pods: int = 0  # entries found for the first round's cgroups before removal (sanity)
    bpf_stale_keys: int = 0  # entries of removed cgroups still in the maps at the end
    bpf_keys_at_end: int = 0
    overflow_points: int = 0
    agent_errors: str = ""

    @property
    def rss_growth_kib(self) -> int:
        return self.rss_end_kib - self.rss_warm_kib

    def summary(self) -> str:
        return (f"{self.lifecycles} pod lifecycles in {self.rounds} rounds, {self.seconds:.0f} s, "
                f"{self.exports} exports; RSS {self.rss_after_first_round_kib / 1024:.1f} MiB after the first "
                f"round, {self.rss_warm_kib / 1024:.1f} MiB after a tenth of the rounds -> "
                f"{self.rss_end_kib / 1024:.1f} MiB at the end (growth {self.rss_growth_kib / 1024:+.1f} MiB, "
                f"max {self.rss_max_kib / 1024:.1f} MiB); stale resources {len(self.stale_resources)}; "
                f"pods never exported {self.missing_pods}; BPF entries of live pods seen {self.bpf_keys_of_live_pods}, "
                f"of removed cgroups left {self.bpf_stale_keys} (of {self.bpf_keys_at_end} at the end); "
                f"overflow points {self.overflow_points}")


def _pod_uids(request: ExportMetricsServiceRequest) -> set[str]:
    return {a.value.string_value for rm in request.resource_metrics for a in rm.resource.attributes
            if a.key == "k8s.pod.uid"}


def _overflow_points(request: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                for dp in getattr(m, kind).data_points:
                    n += any(a.key == OVERFLOW_KEY for a in dp.attributes)
    return n


def per_cgroup_map_keys(pid: int) -> dict[int, set[int]]:
    """map id -> cgroup ids (u64 keys) of every hash map with 8-byte keys the agent holds."""
    _, map_ids = bpf_ids_of(pid)
    out: dict[int, set[int]] = {}
    for map_id in sorted(map_ids):
        info = json.loads(subprocess.run(["bpftool", "map", "show", "id", str(map_id), "-j"],
                                         capture_output=True, text=True, check=True).stdout)
        if info.get("type") not in ("hash", "percpu_hash") or info.get("bytes_key") != 8:
            continue
        dump = json.loads(subprocess.run(["bpftool", "map", "dump", "id", str(map_id), "-j"],
                                         capture_output=True, text=True, check=True).stdout)
        keys: set[int] = set()
        for entry in dump:
            raw = entry.get("key")
            if isinstance(raw, list):
                keys.add(int.from_bytes(bytes(int(b, 16) for b in raw), "little"))
            else:
                keys.add(int(entry["formatted"]["key"]))
        out[map_id] = keys
    return out


def soak(tmp: Path, lifecycles: int, batch: int, interval_ms: int,
         progress: Callable[[str], None] = lambda _s: None) -> SoakResult:
    interval = interval_ms / 1000.0
    result = SoakResult()
    node = FakeNode.start(tmp, protocol="http")  # no gRPC in this process: it forks container processes
    agent: AgentProcess | None = None
    deleted_at: dict[str, float] = {}
    removed_ids: set[int] = set()
    t0 = time.monotonic()
    try:
        agent = AgentProcess.run(node.config(interval_ms=interval_ms), node.env("http"))
        node.receiver.wait_for(1, timeout=120)

        def drain() -> None:
            with node.receiver._cond:
                received = list(node.receiver.received)
                node.receiver.received.clear()
            for item in received:
                result.exports += 1
                result.overflow_points += _overflow_points(item.request)
                for uid in _pod_uids(item.request):
                    gone = deleted_at.get(uid)
                    if gone is not None and item.at > gone + 3 * interval:
                        result.stale_resources.append(uid)
                seen.update(_pod_uids(item.request))

        seen: set[str] = set()
        rounds = max(1, lifecycles // batch)
        for r in range(rounds):
            t_round = time.monotonic()
            pods = [node.add_pod(f"kpt-rel-churn-{r}-{i}") for i in range(batch)]
            want = {p.uid for p in pods}
            deadline = time.monotonic() + 30 + 3 * interval
            while time.monotonic() < deadline and not want <= seen:
                time.sleep(interval / 4)
                drain()
            result.missing_pods += len(want - seen)
            if r == 0:
                live_ids = set().union(*(p.cgroup_ids for p in pods))
                result.bpf_keys_of_live_pods = sum(len(keys & live_ids)
                                                   for keys in per_cgroup_map_keys(agent.pid).values())
            t_del = time.monotonic()
            for p in pods:
                removed_ids |= p.cgroup_ids
                node.remove_pod(p)
                deleted_at[p.uid] = t_del
            seen -= want
            rss = rss_kib(agent.pid)
            result.rss_max_kib = max(result.rss_max_kib, rss)
            if r == 0:
                result.rss_after_first_round_kib = rss
            if r == rounds // 10:
                result.rss_warm_kib = rss
            result.lifecycles += batch
            result.rounds += 1
            if r % 10 == 0 or r == rounds - 1:
                progress(f"round {r + 1}/{rounds}: {result.lifecycles} lifecycles, RSS {rss / 1024:.1f} MiB, "
                         f"round {time.monotonic() - t_round:.1f} s")
        time.sleep(4 * interval)
        drain()
        result.rss_end_kib = rss_kib(agent.pid)
        result.rss_max_kib = max(result.rss_max_kib, result.rss_end_kib)
        maps = per_cgroup_map_keys(agent.pid)
        result.bpf_keys_at_end = sum(len(k) for k in maps.values())
        result.bpf_stale_keys = sum(len(k & removed_ids) for k in maps.values())
        code, _ = agent.terminate()
        result.agent_errors = "\n".join(ln for ln in agent.lines if " ERROR " in ln or "Traceback" in ln)
        if code != 0:
            result.agent_errors += f"\nexit code {code}"
    finally:
        if agent is not None:
            agent.kill()
        node.close()
        result.seconds = time.monotonic() - t0
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lifecycles", type=int, default=10000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--interval-ms", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpt-rel-soak-") as tmp:
        res = soak(Path(tmp), args.lifecycles, args.batch, args.interval_ms,
                   progress=lambda s: print(s, flush=True))
    print(res.summary())
    if res.agent_errors:
        print("agent errors:\n" + res.agent_errors)
    ok = (not res.stale_resources and not res.missing_pods and not res.bpf_stale_keys
          and not res.overflow_points and res.rss_growth_kib <= 10 * 1024 and not res.agent_errors)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
