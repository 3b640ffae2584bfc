"""Per-cycle cost of the cgroup layer at node scale, on real kernel objects (run as root).

Creates N pods (default 110) as real cgroups in this machine's hierarchies (systemd-style Burstable
pods, a sandbox and two containerd scopes each, a process in every cgroup) and one network namespace
per pod (a veth pair up, the sandbox process inside), then times PodCgroupMapper.map() and every
cgroup collector's collect() over repeated cycles. Everything is removed at the end.

    .venv/bin/python bench/cgroup_cycle.py [--pods 110] [--cycles 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
import time
import uuid

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.collector import Collector
from kpod_otel.collectors.disk_io import DiskIOCollector
from kpod_otel.collectors.filesystem import FilesystemCollector
from kpod_otel.collectors.iface_net import InterfaceNetworkCollector
from kpod_otel.collectors.memory import MemoryCollector
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.selfmetrics import AgentStats

ROOT = "/sys/fs/cgroup"
HIERARCHIES = ("memory", "blkio", "cpu", "pids", "unified")
QOS_REL = "kubepods.slice/kubepods-burstable.slice"


def mk(rel: str) -> None:
    for h in HIERARCHIES:
        os.makedirs(os.path.join(ROOT, h, rel), exist_ok=True)


def join(pid: int, rel: str) -> None:
    for h in HIERARCHIES:
        with open(os.path.join(ROOT, h, rel, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--cycles", type=int, default=10)
    args = ap.parse_args()
    tag = secrets.token_hex(2)
    pods: list[PodInfo] = []
    rels: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    netns: list[str] = []
    try:
        for i in range(args.pods):
            uid = str(uuid.uuid4())
            pod_rel = f"{QOS_REL}/kubepods-burstable-pod{uid.replace('-', '_')}.slice"
            ids = [secrets.token_hex(32) for _ in range(3)]
            mk(pod_rel)
            rels.append(pod_rel)
            ns = f"kpt-cg-b{tag}-{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            netns.append(ns)
            subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
                           check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
            for n, cid in enumerate(ids):
                rel = f"{pod_rel}/cri-containerd-{cid}.scope"
                mk(rel)
                rels.append(rel)
                argv = ["ip", "netns", "exec", ns, "sleep", "600"] if n == 0 else ["sleep", "600"]
                proc = subprocess.Popen(argv)
                procs.append(proc)
                join(proc.pid, rel)
            pods.append(PodInfo(uid=uid, name=f"pod-{i}", namespace="bench", qos_class="Burstable",
                                containers=tuple(ContainerInfo(f"c{n}", cid, "containerd")
                                                 for n, cid in enumerate(ids[1:]))))
        time.sleep(0.5)  # let `ip netns exec` exec into sleep

        fs = CgroupFS.detect(ROOT)
        stats = AgentStats()
        mapper = PodCgroupMapper(fs, stats, node_name="bench")
        collectors: list[Collector] = [
            DiskIOCollector(fs, stats), MemoryCollector(fs, stats),
            InterfaceNetworkCollector(stats, use_netlink=True),
            FilesystemCollector(fs, stats),
        ]
        fallback = InterfaceNetworkCollector(stats, use_netlink=False)
        fallback.name = "network(proc/net/dev)"
        collectors.append(fallback)
        timings: dict[str, list[float]] = {"mapper.map": []}
        points: dict[str, int] = {}
        t = time.perf_counter()
        targets = mapper.map(pods)
        first_map = time.perf_counter() - t
        for _ in range(args.cycles):
            t = time.perf_counter()
            targets = mapper.map(pods)
            timings["mapper.map"].append(time.perf_counter() - t)
            for c in collectors:
                t = time.perf_counter()
                snap = c.collect(targets)
                timings.setdefault(c.name, []).append(time.perf_counter() - t)
                points[c.name] = sum(len(v) for m in snap.points.values() for v in m.values())
        for c in collectors:
            c.close()
        print(f"{args.pods} pods, {args.cycles} cycles; "
              f"first mapper.map (cold cache): {first_map * 1e3:.1f} ms")
        for name, values in timings.items():
            first = values[0] * 1e3
            print(f"  {name:28s} median {statistics.median(values) * 1e3:7.2f} ms   first {first:7.2f} ms"
                  f"   points {points.get(name, '-')}")
        print(f"  errors counted: {stats.total('kpod.agent.errors')}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for ns in netns:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        for rel in sorted(rels, key=lambda r: r.count("/"), reverse=True):
            for h in HIERARCHIES:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(ROOT, h, rel))
        for rel in (QOS_REL, "kubepods.slice"):  # shared parents: only if nobody else uses them
            for h in HIERARCHIES:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(ROOT, h, rel))


if __name__ == "__main__":
    main()
