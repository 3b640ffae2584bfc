"""One full collection+export cycle of the real agent on a real node layout, next to its floor (run as root).

    .venv/bin/python bench/node_cycle.py [--pods 10,110,250] [--cycles 15] [--profile standard]

What runs: the agent exactly as `kpod-otel run` builds it (`kpod_otel.assembly.build_agent` from a YAML
config: informer discovery, PodCgroupMapper, the profile's eBPF programs compiled, loaded and attached,
the cgroup/procfs collectors, the gRPC OTLP exporter with gzip), timed around `Agent.run_cycle()` with
`time.process_time()` (CPU of every thread of the agent process).

The node (bench/node_env.py): N Burstable pods x (sandbox + 3 containers) as real cgroups in v1
blkio/memory/cpu/pids and the unified v2 tree, a sleeping process in every cgroup, one network
namespace per pod (veth up, the sandbox process inside), two tmpfs volumes per pod under a kubelet-like
root. Discovery: the wire-level fake API server (tests/fakes/k8s.py) announces the N pods; the agent's
informer LISTs and WATCHes it over HTTPS with a token, as in a cluster. The fake API server and the OTLP
gRPC receiver run in another process (their CPU is not the agent's). eBPF maps: every per-cgroup map of
every loaded program gets one entry per sandbox/container cgroup id by direct map updates (the sleeping
processes alone would leave most maps empty); the maps also hold whatever the rest of the machine does.

The floor (bench/floor.py), measured in the same run on the same pods: read the same files (recorded
during a cycle; the cgroup files the agent keeps open, re-read with pread), statvfs the same mounts,
batch-read the same maps, one netlink stats dump per netns,
and serialize+gzip the same requests (already built as messages).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import gc
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from bench.floor import KeptFloor, MapBatchReader, NetlinkFloor, OpenRecorder, floor_parts
from bench.node_env import NodePods, ServerProcess, agent_yaml, ebpf_sources, leftovers, populate_maps
from kpod_otel.assembly import build_agent
from kpod_otel.config import parse_config

WARMUP_CYCLES = 3


class GcTimer:
    """gc.callbacks hook: time spent in the cyclic garbage collector, and full (generation 2) runs."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.seconds += time.process_time() - self._t0
            self.full += info["generation"] == 2


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def cpu_of(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        out.append(time.process_time() - c0)
    return out


def points_of(req: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                n += len(getattr(m, m.WhichOneof("data")).data_points)
    return n


def bench(node: NodePods, n: int, cycles: int, profile: str, recorder: OpenRecorder,
          workdir: Path, profile_out: str = "", dump_out: str = "") -> dict[str, Any]:
    pods = node.pods[:n]
    server = ServerProcess(workdir)
    assembled = None
    netlink = None
    kept = None
    try:
        server.add(pods)
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = server.endpoint
        config = parse_config(agent_yaml(server, node.kubelet_root, profile), env={})
        assembled = build_agent(config, console=False, export=True)
        assembled.start()
        collectors = assembled.pipeline.collectors
        bpf = ebpf_sources(collectors)
        populate_maps(collectors, node.cgroup_ids(pods))
        agent = assembled.agent
        # the first cycle opens the files the agent keeps open (cgroup files); the recorded cycle, after the
        # warm-up, opens the others: the floor reads both kinds as the agent does
        recorder.paths.clear()
        recorder.on = True
        assert agent.run_cycle(), "export failed"
        recorder.on = False
        first_files = recorder.files()
        for _ in range(WARMUP_CYCLES - 1):
            assert agent.run_cycle(), "export failed"
        recorder.paths.clear()
        recorder.on = True
        agent.run_cycle()
        recorder.on = False
        files = recorder.files()
        reopened = set(files)
        kept = KeptFloor([p for p in dict.fromkeys(first_files)
                          if p not in reopened and p.startswith("/sys/fs/cgroup/")])
        time.sleep(0.3)
        server.take_requests()
        wire0 = server.received()["wire"]
        wall, cpu = [], []
        gc_time = GcTimer()
        gc.callbacks.append(gc_time)
        profiler = None
        if profile_out:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        for _ in range(cycles):
            w0, c0 = time.perf_counter(), time.process_time()
            ok = agent.run_cycle()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            assert ok, "export failed"
            time.sleep(0.05)
        gc.callbacks.remove(gc_time)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile_out}.{n}")
        time.sleep(0.5)
        got = server.take_requests()
        wire = server.received()["wire"] - wire0
        reqs = [ExportMetricsServiceRequest.FromString(b) for b, _ in got]
        per_cycle = len(reqs) / cycles
        gz = [len(gzip.compress(b, compresslevel=6)) for b, _ in got]
        last = reqs[-int(per_cycle):] if per_cycle >= 1 else reqs[-1:]
        if dump_out:  # the last cycle's requests as sent (serialized), one file per request
            for i, (b, _) in enumerate(got[-len(last):]):
                Path(f"{dump_out}.{n}.{i}").write_bytes(b)
        pod_resources = sum(1 for r in last for rm in r.resource_metrics
                            if any(kv.key == "k8s.pod.uid" for kv in rm.resource.attributes))
        points = sum(points_of(r) for r in last)

        # the floor, same pods, same run
        maps = [MapBatchReader(c._program.table(m)) for c in bpf for m in c._program.spec.cgroup_maps]
        netlink = NetlinkFloor([f"/run/netns/{p.netns}" for p in pods])
        mounts = [m for p in pods for m in p.mounts]
        parts = floor_parts(files, mounts, maps, netlink, last, kept)
        floor = {name: median_ms(cpu_of(fn, cycles)) for name, fn in parts.items()}
        return {
            "pods": n, "cpu": median_ms(cpu), "wall": median_ms(wall), "points": points,
            "resources": pod_resources, "requests_per_cycle": per_cycle,
            "gzip_kb": sum(gz) / cycles / 1024, "wire_kb": wire / cycles / 1024,
            "floor": floor, "files": len(files), "kept": len(kept), "maps": len(maps),
            "gc_ms": gc_time.seconds * 1e3 / cycles, "gc_full": gc_time.full / cycles,
            "collector_s": dict(assembled.stats.gauges_for("kpod.agent.collector.duration"))
            if hasattr(assembled.stats, "gauges_for") else {},
        }
    finally:
        if netlink is not None:
            netlink.close()
        if kept is not None:
            kept.close()
        if assembled is not None:
            assembled.agent.close()
            assembled.stop()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", default="10,110,250")
    ap.add_argument("--cycles", type=int, default=15)
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--cprofile", default="", help="write cProfile stats of the timed cycles to FILE.<pods>")
    ap.add_argument("--dump", default="", help="write the last cycle's requests to FILE.<pods>.<i>")
    args = ap.parse_args()
    sizes = [int(x) for x in args.pods.split(",")]
    recorder = OpenRecorder()
    node = NodePods()
    workdir = Path(tempfile.mkdtemp(prefix="kpt-bench-srv-"))
    rows = []
    try:
        print(f"profile {args.profile}; {args.cycles} timed cycles after {WARMUP_CYCLES} warm-up", flush=True)
        for n in sorted(sizes):
            # the node holds exactly the N pods measured (mountinfo, netns and maps scale with the node)
            t = time.monotonic()
            node.add(n - len(node.pods))
            print(f"node: {n} pods x (sandbox + 3 containers) ready in {time.monotonic() - t:.1f} s", flush=True)
            rows.append(bench(node, n, args.cycles, args.profile, recorder, workdir, args.cprofile, args.dump))
            r = rows[-1]
            print(f"  {n} pods done: {r['cpu']:.1f} ms CPU", flush=True)
    finally:
        node.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        left = leftovers(node.tag)
        if left:
            print("LEFT BEHIND:", left)
    print()
    print(f"{'pods':>5} {'points':>7} {'cpu ms':>7} {'ms/pod':>7} {'wall ms':>8} {'floor ms':>9} {'fl/pod':>7} "
          f"{'gzip KB':>8} {'wire KB':>8} {'req/cyc':>7}")
    for r in rows:
        fl = sum(r["floor"].values())
        print(f"{r['pods']:>5} {r['points']:>7} {r['cpu']:>7.1f} {r['cpu'] / r['pods']:>7.3f} {r['wall']:>8.1f} "
              f"{fl:>9.1f} {fl / r['pods']:>7.3f} {r['gzip_kb']:>8.1f} {r['wire_kb']:>8.1f} "
              f"{r['requests_per_cycle']:>7.1f}")
    print()
    print("floor parts (median ms CPU): " + "; ".join(
        f"{r['pods']} pods: " + ", ".join(f"{k} {v:.1f}" for k, v in r["floor"].items())
        + f" ({r['files']} files opened, {r['kept']} kept open, {r['maps']} maps)" for r in rows))
    print("cyclic GC during the timed cycles: " + "; ".join(
        f"{r['pods']} pods: {r['gc_ms']:.1f} ms/cycle, {r['gc_full']:.2f} full collections/cycle" for r in rows))
    for r in rows:
        if r["resources"] != r["pods"]:
            print(f"WARNING: {r['pods']} pods announced but {r['resources']} pod Resources exported")
    if len(rows) >= 2:  # least squares: cpu = fixed + per_pod * N
        xs, ys = [r["pods"] for r in rows], [r["cpu"] for r in rows]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        print(f"linear fit: {my - slope * mx:.1f} ms per cycle + {slope:.3f} ms per pod")
    base = [r["cpu"] / r["pods"] for r in rows]
    mean = statistics.mean(base)
    print(f"cost per pod: {', '.join(f'{b:.3f}' for b in base)} ms; spread vs mean "
          f"{min(base) / mean - 1:+.0%} .. {max(base) / mean - 1:+.0%}")


if __name__ == "__main__":
    main()
