"""Issue 7's end-to-end proof: `kpod-otel run` as a user runs it, on a node built from real kernel objects.

The fake API server announces three pods on this node: a Guaranteed pod (`web`, one container), a
Burstable pod (`worker`, containers `main` and `sidecar`) and a BestEffort pod in kube-system (excluded
by default). Their cgroups, network namespaces, veths and tmpfs volumes are real (tests/e2e/node.py), and
workloads run inside them once the agent's programs are loaded:

  web/app        two spinners pinned to one CPU (run-queue waits, involuntary switches); a TCP server;
                 major faults (a file mapped after its pages were dropped from the page cache)
  worker/main    the TCP client (over the veth, 20% of the server's incoming data segments dropped by
                 nftables: retransmits); O_DIRECT writes and reads on this machine's disk
  worker/sidecar stat() calls that fail a known number of times; a memory hog killed by the OOM killer
  dns (excluded) syscalls, a volume: nothing of it may be exported

Every workload blocks on stdin between rounds, so its counters in /proc are stable while the agent
measures: the test takes an export whose cycle started after the workloads were parked (baseline), runs
one round of everything at once, parks them again, and compares the export's increase with the
independent truth of the same interval (/proc, the cgroup files, /proc/net/snmp, `ip -s link`, `df`,
what the test sent). Then a pod is deleted (API event + cgroups gone) and must leave the export after its
final cycle; then SIGTERM: a final export, exit code 0, and no BPF program or cgroup attachment of the
agent left behind.
"""

from __future__ import annotations

import calendar
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import pytest

from kpod_otel.catalog import METRICS, Level
from kpod_otel.procfs.parsers import parse_uevent
from tests.bpf.conftest import ctx_switches_of, schedstat_of
from tests.bpf.test_cpu_sched import SPINNER
from tests.bpf.test_mem import FAULTER, HOG, v1_oom_kills, v1_stat
from tests.bpf.test_syscall import STATTER
from tests.bpf.test_tcp import CLIENT, SERVER, retrans_segs
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, require_cgroups
from tests.cgroup.test_disk_io_real import CHUNK, DIRECT_IO, HUGE_BPS, READS, WRITES, whole_disk
from tests.cgroup.test_iface_net_real import link_stats
from tests.cgroup.test_memory_real import LIMIT
from tests.conftest import require, require_bcc
from tests.e2e.bpfstate import cgroup_attachments, loaded_prog_ids, prog_ids_held_by, recursion_misses
from tests.e2e.exports import CUMULATIVE, Cycle, Hist, histogram, matching, number, points, wait_cycle_after
from tests.e2e.node import Node, NodePod
from tests.fakes.k8s import NODE, FakeCluster, FakeServer, make_pod
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.tls import TestCA
from tests.series_rules import NO_RECORDED_VALUE, SeriesChecker
from tests.test_e2e_discovery import TOKEN, kubeconfig

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kpt-e2e-shop"
PORT = 5001
CONNS, PAYLOAD, REPLY = 2, 200_000, 1_000
DROP_PERCENT = 20
N_FAIL, M_OK = 3000, 1000
FRAMES = 7  # frames of an unknown EtherType: the receiving veth counts each as an rx drop
SPIN_S = "0.8"
INTERVAL_MS = 2000
SCHED_PROGRAMS = "tracepoint__sched__"  # bcc names a TRACEPOINT_PROBE program after its tracepoint

# metric -> (OTLP data kind, unit, level), from the catalog (test_metric_contract.py freezes names, units, kinds)
SEED_METRICS: dict[str, tuple[str, str, str]] = {
    m.name: (m.otlp_data, m.unit, m.level.value) for m in METRICS if m.level is not Level.AGENT
}
# Where each metric's workload ran: (pod letter, container or None for pod level)
PRODUCED_IN: dict[str, tuple[str, str | None]] = {
    "kpod.cpu.runqueue.latency": ("web", "app"),
    "kpod.cpu.context.switches": ("web", "app"),
    "kpod.net.tcp.bytes.sent": ("worker", "main"),
    "kpod.net.tcp.bytes.received": ("web", "app"),
    "kpod.net.tcp.retransmits": ("worker", "main"),
    "kpod.net.tcp.connections": ("web", "app"),
    "kpod.net.tcp.rtt": ("worker", "main"),
    "kpod.mem.oom.kills": ("worker", "sidecar"),
    "kpod.mem.major.page.faults": ("web", "app"),
    "kpod.syscall.count": ("worker", "sidecar"),
    "kpod.syscall.errors": ("worker", "sidecar"),
    "kpod.syscall.latency": ("worker", "sidecar"),
    "kpod.disk.read.bytes": ("worker", "main"),
    "kpod.disk.written.bytes": ("worker", "main"),
    "kpod.disk.reads": ("worker", "main"),
    "kpod.disk.writes": ("worker", "main"),
    **{m: ("web", None) for m in SEED_METRICS if m.startswith(("kpod.net.iface.", "kpod.fs."))},
    # issue 15: CPU time and pressure where the spinners ran; the limit and throttling where a CPU quota is
    # set; memory where a memory limit is set
    "kpod.cpu.time": ("web", "app"),
    "kpod.pressure.stall.time": ("web", "app"),
    **{m: ("worker", "main") for m in ("kpod.cpu.limit", "kpod.cpu.periods", "kpod.cpu.throttled.periods",
                                       "kpod.cpu.throttled.time")},
    **{m: ("worker", "sidecar") for m in ("kpod.mem.usage", "kpod.mem.working_set", "kpod.mem.rss",
                                          "kpod.mem.cache", "kpod.mem.limit")},
}
assert set(PRODUCED_IN) == set(SEED_METRICS) and len(SEED_METRICS) == 38
CPU_QUOTA_US = 200_000  # two CPUs per 100 ms period: counted periods, never throttled on this 2-CPU node

# ethernet frame with the local-experimental EtherType 0x88b5: no protocol handler takes it
UNKNOWN_ETHERTYPE = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
dst = bytes.fromhex(sys.argv[2].replace(":", ""))
for _ in range(int(sys.argv[3])):
    s.send(dst + s.getsockname()[4] + b"\\x88\\xb5" + b"kpt-e2e".ljust(46, b"."))
"""


def df(path: Path) -> dict[str, int]:
    """What `df -B1` says: size, used, avail."""
    out = subprocess.run(["df", "-B1", "--output=size,used,avail", str(path)], check=True,
                         capture_output=True, text=True).stdout.splitlines()[1].split()
    return {"kpod.fs.capacity.bytes": int(out[0]), "kpod.fs.usage.bytes": int(out[1]),
            "kpod.fs.available.bytes": int(out[2])}


def container_attrs(pod: NodePod, name: str) -> dict[str, object]:
    return {"k8s.container.name": name, "container.id": pod.container_ids[name]}


@dataclass(frozen=True)
class Truth:
    """The independent counters of the workloads' kernel objects at one moment (or a difference)."""

    switches: int  # web/app processes' context switches (/proc/<pid>/task/*/status)
    involuntary: int  # of which nonvoluntary (preempted)
    run_delay_ns: int  # their run-queue wait (/proc/<pid>/task/*/schedstat)
    arrivals: int  # their switch-ins (same file)
    retrans_web: int  # RetransSegs of each pod's netns (/proc/net/snmp)
    retrans_worker: int
    majflt: int  # pgmajfault of web/app's v1 memory cgroup
    oom: int  # oom_kill of worker/sidecar's v1 memory cgroup

    def __sub__(self, other: Truth) -> Truth:
        return Truth(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def hist_delta(after: Hist | None, before: Hist | None) -> Hist:
    assert after is not None
    return after - before if before is not None else after


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    require_bcc()
    require_cgroups()
    for tool in ("ip", "nft", "bpftool", "df", "mount"):
        require(shutil.which(tool) is not None, f"needs {tool}")
    n = Node(tmp_path / "kubelet")
    try:
        yield n
    finally:
        failures = n.cleanup()
        assert not failures, failures


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory on this machine's disk (not tmpfs) for O_DIRECT and page-fault files."""
    d = Path(tempfile.mkdtemp(prefix="kpt-e2e-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def agent_config(tmp_path: Path, api: FakeServer, ca: TestCA) -> Path:
    cfg = tmp_path / "kpod.yaml"
    cfg.write_text(f"""kpod:
  profile: comprehensive
  poll-interval: {INTERVAL_MS}
  node-name: {NODE}
  discovery:
    mode: informer
    kubeconfig: {kubeconfig(tmp_path / "kubeconfig", api, ca)}
  bpf:
    program-dir: {REPO / "ebpf"}
  cgroup:
    root: {CGROUP_ROOT}
    proc-root: /proc
    sys-root: /sys
    kubelet-root: {tmp_path / "kubelet"}
  health:
    port: 0
""")
    return cfg


@pytest.mark.root
@pytest.mark.bpf
@pytest.mark.slow
def test_every_seed_metric_under_its_pod(node: Node, scratch: Path, tmp_path: Path) -> None:
    kpod_otel = Path(sys.executable).parent / "kpod-otel"
    require(kpod_otel.exists(), f"needs the kpod-otel console script next to {sys.executable}")
    disk = whole_disk(os.stat(scratch).st_dev)
    require(os.path.exists(f"/sys/dev/block/{disk}"), f"block device {disk} of /var/tmp is not visible")
    disk_name = parse_uevent(Path(f"/sys/dev/block/{disk}/uevent").read_text()).devname
    cpu = max(os.sched_getaffinity(0))

    ca = TestCA(tmp_path, "kpt-e2e-ca")
    cluster = FakeCluster()
    api = FakeServer(cluster, ca.issue("kpt-e2e-api"), token=TOKEN, role="api").up()
    receiver = OtlpReceiver().start("grpc")
    agent: subprocess.Popen[bytes] | None = None
    agent_log = (tmp_path / "agent.log").open("wb")
    try:
        # --- the node: pods, their kernel objects, parked workloads -------------------------------
        pods = {
            "web": node.add_pod(make_pod("kpt-e2e-web", NAMESPACE, qos="Guaranteed", containers=("app",)),
                                "a", "198.51.100.1"),
            "worker": node.add_pod(make_pod("kpt-e2e-worker", NAMESPACE, qos="Burstable",
                                            containers=("main", "sidecar")), "b", "198.51.100.2"),
            "dns": node.add_pod(make_pod("kpt-e2e-dns", "kube-system", qos="BestEffort", containers=("dns",)),
                                "c", "198.51.100.3"),
        }
        web, worker, dns = pods["web"], pods["worker"], pods["dns"]
        node.link(web, worker)
        node.drop_randomly(web, PORT, DROP_PERCENT)
        volumes = {"web": node.mount_volume(web, "cache", 16, 3 << 20),
                   "worker": node.mount_volume(worker, "scratch", 8, 1 << 20),
                   "dns": node.mount_volume(dns, "dns-cache", 4, 1 << 20)}
        sidecar_mem = worker.cgroup_dir("memory", "sidecar")
        (sidecar_mem / "memory.limit_in_bytes").write_text(str(LIMIT))
        (sidecar_mem / "memory.swappiness").write_text("0")  # no swap to escape to: the kernel must kill
        node.throttle_rule(worker, "main", disk, HUGE_BPS)  # switches the v1 blkio statistics on
        (worker.cgroup_dir("cpu", "main") / "cpu.cfs_quota_us").write_text(str(CPU_QUOTA_US))

        direct_file = scratch / "direct"
        with direct_file.open("wb") as f:  # allocated and on disk before the measured process runs
            f.write(b"\0" * CHUNK * WRITES)
            f.flush()
            os.fsync(f.fileno())
        cold_file = scratch / "cold"
        with cold_file.open("wb") as f:
            f.write(os.urandom(8 << 20))
            f.flush()
            os.fsync(f.fileno())

        spinners = [node.workload(web, "app", SPINNER, SPIN_S) for _ in range(2)]
        for w in spinners:
            os.sched_setaffinity(w.pid, {cpu})  # both on one CPU: each waits for the other's slices
        tcp_args = (web.net.address, str(PORT), str(CONNS), str(PAYLOAD), str(REPLY))
        server = node.workload(web, "app", SERVER, *tcp_args)
        client = node.workload(worker, "main", CLIENT, *tcp_args)
        faulter = node.workload(web, "app", FAULTER, str(cold_file))
        statter = node.workload(worker, "sidecar", STATTER, str(N_FAIL), str(M_OK))
        hog = node.workload(worker, "sidecar", HOG)
        dns_statter = node.workload(dns, "dns", STATTER, "500", "500")
        direct_io = worker.tree.spawn(worker.containers["main"], [PYTHON, "-c", DIRECT_IO, str(direct_file)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert direct_io.stdin is not None and direct_io.stdout is not None
        assert direct_io.stdout.readline() == b"ready\n"
        for p in pods.values():
            cluster.add_pod(p.api)

        # --- the agent, exactly as a user runs it -------------------------------------------------
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_", "KUBERNETES_"))}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        progs_before = loaded_prog_ids()
        started = time.monotonic()
        started_ns = time.time_ns()
        agent = subprocess.Popen([str(kpod_otel), "run", "--config", str(agent_config(tmp_path, api, ca))],
                                 env=env, stdout=agent_log, stderr=subprocess.STDOUT)
        first = wait_cycle_after(receiver, 0, timeout=60)
        startup_s = time.monotonic() - started
        ours = prog_ids_held_by(agent.pid)
        assert ours, "the agent holds no BPF program"
        assert not ours & progs_before
        ours_attached = {i: a for i, a in cgroup_attachments().items() if i in ours}
        assert {t for _, t in ours_attached.values()} >= {"cgroup_inet_ingress", "cgroup_inet_egress"}

        # --- baseline: every workload is parked, its counters are stable ---------------------------
        app_pids = [w.pid for w in (*spinners, server, faulter)]
        app_mem, main_blkio = web.cgroup_dir("memory", "app"), worker.cgroup_dir("blkio", "main")

        def measure() -> Truth:
            sched = [schedstat_of(p) for p in app_pids]
            return Truth(switches=sum(ctx_switches_of(p) for p in app_pids),
                         involuntary=sum(ctx_switches_of(p, ("nonvoluntary",)) for p in app_pids),
                         run_delay_ns=sum(d for d, _ in sched), arrivals=sum(n for _, n in sched),
                         retrans_web=retrans_segs(web.net.name), retrans_worker=retrans_segs(worker.net.name),
                         majflt=v1_stat(app_mem, "pgmajfault"), oom=v1_oom_kills(sidecar_mem))

        truth0 = measure()
        sched_misses0 = recursion_misses(ours, SCHED_PROGRAMS)
        base = wait_cycle_after(receiver, time.time_ns())

        # --- one round of everything at once ------------------------------------------------------
        for w in (*spinners, server, client, faulter, statter, dns_statter, hog):
            w.start()
        direct_io.stdin.write(b"go\n")
        direct_io.stdin.flush()
        for w in (*spinners, server, client, faulter, statter, dns_statter):
            w.wait(timeout=60)
        assert direct_io.stdout.readline() == b"done\n" and direct_io.wait(timeout=30) == 0
        assert hog.proc.wait(timeout=60) == -signal.SIGKILL  # the OOM killer's SIGKILL
        subprocess.run(["ip", "netns", "exec", worker.net.name, PYTHON, "-c", UNKNOWN_ETHERTYPE,
                        worker.net.ifname, web.net.mac, str(FRAMES)], check=True)

        truth = measure() - truth0
        sched_misses = recursion_misses(ours, SCHED_PROGRAMS) - sched_misses0
        # memcg statistics are flushed lazily (at the latest every 2 s): take the first cycle that has
        # the kernel's final count, within a few cycles
        t_done = time.time_ns()
        deadline = time.monotonic() + 5 * INTERVAL_MS / 1000
        while True:
            final = wait_cycle_after(receiver, t_done)
            majflt = v1_stat(app_mem, "pgmajfault") - truth0.majflt
            faults = (number(final.pod(web.uid), "kpod.mem.major.page.faults", **container_attrs(web, "app"))
                      - number(base.pod(web.uid), "kpod.mem.major.page.faults", **container_attrs(web, "app")))
            if faults == majflt or time.monotonic() > deadline:
                break
            t_done = final.at_ns
        ops = blkio(main_blkio, "io_serviced", disk)
        moved = blkio(main_blkio, "io_service_bytes", disk)
        links = {name: link_stats(pods[name].net) for name in ("web", "worker")}
        filesystems = {name: df(path) for name, path in volumes.items()}

        # --- shape: every seed metric, right Resource, right container, unit and type --------------
        assert_resources(first, pods)
        assert_resources(final, pods)
        for metric, (kind, unit, level) in SEED_METRICS.items():
            pod_name, container = PRODUCED_IN[metric]
            res = final.pod(pods[pod_name].uid)
            assert metric in res, f"{metric} missing under pod {pod_name}"
            m = res[metric]
            assert m.unit == unit, (metric, m.unit)
            assert m.WhichOneof("data") == kind, (metric, m.WhichOneof("data"))
            if kind == "sum":
                assert m.sum.is_monotonic and m.sum.aggregation_temporality == CUMULATIVE, metric
            if kind == "histogram":
                assert m.histogram.aggregation_temporality == CUMULATIVE, metric
            for p in pods.values():
                if p is dns or metric not in final.pod(p.uid):
                    continue
                for a, _ in points(final.pod(p.uid), metric):
                    if level == "container" or a.get("system.filesystem.mountpoint") == "/":
                        assert (a["k8s.container.name"], a["container.id"]) in p.container_ids.items(), \
                            (metric, a)
                    else:
                        assert "k8s.container.name" not in a and "container.id" not in a, (metric, a)
            if container is not None:
                assert matching(res, metric, **container_attrs(pods[pod_name], container)), (metric, container)

        def delta(metric: str, pod: NodePod, container: str, **extra: object) -> float:
            want = {**container_attrs(pod, container), **extra}
            return number(final.pod(pod.uid), metric, **want) - number(base.pod(pod.uid), metric, **want)

        def hdelta(metric: str, pod: NodePod, container: str) -> Hist:
            return hist_delta(histogram(final.pod(pod.uid), metric, **container_attrs(pod, container)),
                              histogram(base.pod(pod.uid), metric, **container_attrs(pod, container)))

        # --- values against the truth -------------------------------------------------------------
        # CPU (web/app: the two spinners, the server, the faulter): /proc's per-thread counters
        assert delta("kpod.cpu.context.switches", web, "app") == truth.switches > 0
        # the spinners preempt each other: involuntary switches, told apart as the kernel does
        assert delta("kpod.cpu.context.switches", web, "app", **{"kpod.switch.type": "involuntary"}) \
            == truth.involuntary > 20
        run_delay_s = truth.run_delay_ns / 1e9
        rq = hdelta("kpod.cpu.runqueue.latency", web, "app")
        arrivals = truth.arrivals
        assert arrivals > 20
        # One wait per switch-in. The kernel skips a tracing program that would nest in another one on
        # the same CPU (a wakeup from an interrupt while a syscall program runs: the comprehensive
        # profile makes that common); each skip loses at most one wait, and bpftool counts the skips.
        assert arrivals - max(2, arrivals // 100) - sched_misses <= rq.count <= arrivals, \
            (rq.count, arrivals, sched_misses)
        assert sum(rq.bucket_counts) == rq.count
        assert abs(rq.sum - run_delay_s) <= 0.1 * run_delay_s + 10e-6 * rq.count
        assert sum(c for b, c in zip(rq.bounds, rq.bucket_counts, strict=False) if b >= 1e-3) >= 5

        # start times of the composed `cpu` collector's two sources: the cgroup files count since the
        # container's cgroup was created (after the pod object), eBPF's maps only since the program's load
        created = calendar.timegm(time.strptime(web.api["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
        assert created * 10**9 < started_ns
        for metric, since in (("kpod.cpu.time", created * 10**9), ("kpod.cpu.context.switches", None)):
            starts = {dp.start_time_unix_nano for dp in matching(final.pod(web.uid), metric,
                                                                 **container_attrs(web, "app"))}
            assert starts, metric
            if since is None:
                assert all(started_ns < s < first.at_ns for s in starts), (metric, starts, started_ns)
            else:
                assert starts == {since}, (metric, starts, since)

        # TCP over the lossy veth: the bytes the test sent (+1 per connection and direction for the FIN)
        assert 0 <= delta("kpod.net.tcp.bytes.sent", worker, "main") - CONNS * PAYLOAD <= CONNS
        assert 0 <= delta("kpod.net.tcp.bytes.received", web, "app") - CONNS * PAYLOAD <= CONNS
        assert 0 <= delta("kpod.net.tcp.bytes.sent", web, "app") - CONNS * REPLY <= CONNS
        assert 0 <= delta("kpod.net.tcp.bytes.received", worker, "main") - CONNS * REPLY <= CONNS
        assert delta("kpod.net.tcp.connections", worker, "main") == CONNS  # active opens
        assert delta("kpod.net.tcp.connections", web, "app") == CONNS  # passive, charged to the listener
        assert truth.retrans_worker > 5  # the drops worked
        assert delta("kpod.net.tcp.retransmits", worker, "main") == truth.retrans_worker
        assert delta("kpod.net.tcp.retransmits", web, "app") == truth.retrans_web
        for pod, c in ((worker, "main"), (web, "app")):
            rtt = hdelta("kpod.net.tcp.rtt", pod, c)
            assert rtt.count > 0 and sum(rtt.bucket_counts) == rtt.count
            assert 0 < rtt.sum / rtt.count < 0.2  # a veth: far below 200 ms

        # memory: the v1 memory controller's own counters
        assert delta("kpod.mem.oom.kills", worker, "sidecar") == truth.oom == 1
        assert delta("kpod.mem.oom.kills", worker, "main") == 0
        # the limits the test set, read back through the cgroup files (issue 15)
        assert number(final.pod(worker.uid), "kpod.cpu.limit", **container_attrs(worker, "main")) == 2.0
        assert number(final.pod(worker.uid), "kpod.mem.limit", **container_attrs(worker, "sidecar")) == LIMIT
        assert faults == majflt >= 1000  # 2048 cold pages, one fault each

        # syscalls (worker/sidecar: N_FAIL failing and M_OK succeeding stat() calls, and the hog)
        errors = delta("kpod.syscall.errors", worker, "sidecar")
        calls = delta("kpod.syscall.count", worker, "sidecar")
        assert N_FAIL <= errors <= N_FAIL + 10, errors
        assert N_FAIL + M_OK <= calls <= N_FAIL + M_OK + 300, calls
        lat = hdelta("kpod.syscall.latency", worker, "sidecar")
        assert sum(lat.bucket_counts) == lat.count
        assert calls - 2 <= lat.count <= calls

        # disk (worker/main, O_DIRECT): the bytes moved, and the operations the kernel counted
        dev = {"system.device": disk_name}
        assert delta("kpod.disk.written.bytes", worker, "main", **dev) == CHUNK * WRITES
        # reads: ours, plus whatever the container's other processes paged in from disk meanwhile (the
        # TCP client imports a module in its round): bounded, and exactly what the kernel counted
        read_bytes = delta("kpod.disk.read.bytes", worker, "main", **dev)
        assert CHUNK * READS <= read_bytes <= CHUNK * READS + (1 << 20), read_bytes
        final_main = final.pod(worker.uid)
        assert tuple(number(final_main, f"kpod.disk.{m}.bytes", **container_attrs(worker, "main"), **dev)
                     for m in ("read", "written")) == moved
        assert tuple(number(final_main, f"kpod.disk.{m}", **container_attrs(worker, "main"), **dev)
                     for m in ("reads", "writes")) == ops
        assert delta("kpod.disk.writes", worker, "main", **dev) >= WRITES
        assert delta("kpod.disk.reads", worker, "main", **dev) >= READS

        # interfaces: `ip -s link` in each pod's netns (the links are quiet now), per interface
        for name, stats in links.items():
            pod = pods[name]
            res = final.pod(pod.uid)
            reported = {m.removeprefix("kpod.net.iface."): int(number(res, m, **{
                "network.interface.name": pod.net.ifname})) for m in SEED_METRICS if "iface" in m}
            assert reported == stats, (name, reported, stats)
            assert {a["network.interface.name"] for a, _ in points(res, "kpod.net.iface.rx.bytes")} == \
                {pod.net.ifname}  # loopback is not reported
        ifdelta = {m: number(final.pod(web.uid), m) - number(base.pod(web.uid), m)
                   for m in ("kpod.net.iface.rx.drops", "kpod.net.iface.rx.bytes", "kpod.net.iface.tx.bytes")}
        assert ifdelta["kpod.net.iface.rx.drops"] == FRAMES
        assert ifdelta["kpod.net.iface.rx.bytes"] >= CONNS * PAYLOAD * (100 - DROP_PERCENT) // 100
        assert ifdelta["kpod.net.iface.tx.bytes"] >= CONNS * REPLY

        # filesystems: what `df` says about each pod's tmpfs volume; and no container root: the
        # containers' processes see the node's own disk at "/", which is not the container's usage
        for name in ("web", "worker"):
            res = final.pod(pods[name].uid)
            assert {a["system.filesystem.mountpoint"] for m in SEED_METRICS if m.startswith("kpod.fs.")
                    for a, _ in points(res, m)} == {str(volumes[name])}
            mp = {"system.filesystem.mountpoint": str(volumes[name])}
            assert {m: number(res, m, **mp) for m in filesystems[name]} == filesystems[name]
            assert filesystems[name]["kpod.fs.usage.bytes"] >= (3 << 20 if name == "web" else 1 << 20)

        # --- a pod goes. First the API object (as with `kubectl delete --force --grace-period=0`: the
        # DELETED event arrives while the pod's processes and cgroups still exist): the Resource gets
        # its final cycle with its last cumulative values, then leaves although its cgroups linger.
        # Then the kubelet's part: processes killed, volume unmounted, cgroups removed.
        def cycles_until_gone(since_ns: int) -> list[Cycle]:
            seen: list[Cycle] = []
            while len(seen) < 8:
                seen.append(wait_cycle_after(receiver, seen[-1].at_ns if seen else since_ns))
                if len(seen) >= 2 and all(worker.uid not in x.resources for x in seen[-2:]):
                    break
            return seen

        sent = number(final.pod(worker.uid), "kpod.net.tcp.bytes.sent", **container_attrs(worker, "main"))
        t_delete = time.time_ns()
        cluster.delete_pod(worker.uid)
        after_delete = cycles_until_gone(t_delete)
        with_worker = [x for x in after_delete if worker.uid in x.resources]
        assert all(worker.uid not in x.resources for x in after_delete[-2:]), "the deleted pod stays"
        # its final cycle (and, at most, one more that started before the watch event arrived), then one
        # cycle that ends every series of it (NO_RECORDED_VALUE, once), first
        assert 2 <= len(with_worker) <= 3 and after_delete[:len(with_worker)] == with_worker
        *with_values, ended = with_worker
        assert number(with_values[-1].pod(worker.uid), "kpod.net.tcp.bytes.sent",
                      **container_attrs(worker, "main")) == sent
        ended_flags = [dp.flags for metric, m in ended.pod(worker.uid).items() if metric != "resource"
                       for dp in getattr(m, m.WhichOneof("data")).data_points]
        series_before = sum(len(getattr(m, m.WhichOneof("data")).data_points)
                            for metric, m in with_values[-1].pod(worker.uid).items() if metric != "resource")
        assert ended_flags and set(ended_flags) == {NO_RECORDED_VALUE}, ended_flags
        assert len(ended_flags) == series_before  # every series of the pod ended, once each
        t_removed = time.time_ns()
        node.delete_pod(worker)
        after_removal = cycles_until_gone(t_removed)[:2]
        assert len(after_removal) == 2 and all(worker.uid not in x.resources for x in after_removal)
        assert all(web.uid in x.resources for x in [*after_delete, *after_removal])

        # --- SIGTERM: a final export, exit 0, nothing of ours left in the kernel ------------------
        t_term = time.time_ns()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        last = cycle_of_resources(receiver.received[-1].request)
        # the final export: collected after the signal, with the surviving pod and the agent's Resource
        assert wait_cycle_after(receiver, t_term, timeout=1).at_ns > t_term
        assert web.uid in last and "kpod-otel" in last
        assert not ours & loaded_prog_ids(), "BPF programs of the agent are still loaded"
        assert not ours & set(cgroup_attachments()), "cgroup attachments of the agent are left"

        # --- the excluded pod was never exported, by Resource or by container ------------------------
        dns_ids = set(dns.container_ids.values())
        for item in receiver.received:
            for uid, res in cycle_of_resources(item.request).items():
                assert uid != dns.uid
                for metric in res:
                    if metric == "resource":
                        continue
                    for a, _ in points(res, metric):
                        assert a.get("container.id") not in dns_ids

        # --- every exported request, in order, follows the data model's rules ------------------------
        checker = SeriesChecker()
        for item in receiver.received:
            checker.feed(item.request)
        assert not checker.violations, checker.violations[:20]
        assert checker.flagged >= len(ended_flags)

        log_text = (tmp_path / "agent.log").read_text()
        assert TOKEN not in log_text
        assert "final export" in log_text
        print(f"e2e: first export {startup_s:.1f} s after start; {len(receiver.received)} exports; "
              f"runqueue waits {rq.count}/{arrivals} ({sched_misses} sched program runs skipped), "
              f"retransmits {truth.retrans_worker}, "
              f"deleted pod in {len(with_worker)} cycle(s) after its deletion, "
              f"syscalls {calls:.0f} ({errors:.0f} errors), major faults {faults:.0f}")
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        agent_log.close()
        receiver.stop()
        api.down()
        if agent is not None and agent.returncode not in (0, None):
            sys.stderr.write((tmp_path / "agent.log").read_text()[-5000:])


def blkio(blkio_dir: Path, stat: str, disk: str) -> tuple[int, int]:
    """(Read, Write) of one disk in a v1 `blkio.throttle.<stat>_recursive` file ("maj:min Read N")."""
    values = {"Read": 0, "Write": 0}
    for line in (blkio_dir / f"blkio.throttle.{stat}_recursive").read_text().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == disk and fields[1] in values:
            values[fields[1]] = int(fields[2])
    return values["Read"], values["Write"]


def cycle_of_resources(req: Any) -> dict[str, dict[str, Any]]:
    from tests.export.helpers import by_resource

    return by_resource([req])


def assert_resources(cycle: Cycle, pods: dict[str, NodePod]) -> None:
    """One Resource per non-excluded pod, with exactly the pod's identity; none for the excluded one."""
    exported = {k for k in cycle.resources if k != "kpod-otel"}
    assert exported == {pods["web"].uid, pods["worker"].uid}, exported
    for name in ("web", "worker"):
        p = pods[name]
        assert cycle.pod(p.uid)["resource"] == {"k8s.pod.uid": p.uid, "k8s.pod.name": p.name,
                                                "k8s.namespace.name": p.namespace, "k8s.node.name": NODE}

