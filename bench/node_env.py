"""A node for the benchmarks: real pods' kernel objects, the fake API server and the OTLP receiver.

`NodePods` builds N Burstable pods the way kubelet + containerd (systemd driver) lay them out on this
machine's hierarchies (v1 blkio/memory/cpu/pids + the unified v2 tree that gives the eBPF cgroup ids):
a pod slice with a sandbox scope and three container scopes, a sleeping process in each (the sandbox's
inside the pod's network namespace, which has a veth pair up), and two tmpfs volumes under a
kubelet-like `pods/<uid>/volumes` directory (an emptyDir with `medium: Memory` and the projected token
volume, which are both tmpfs on a real node). `cleanup()` removes every process, mount, netns and cgroup
it created. Names: netns `kpt-bench-<tag>-<i>`, tmpfs source `kpt-bench-<tag>`, kubelet root
`/tmp/kpt-bench-<tag>`; pod cgroups must carry kubelet's names (`kubepods-burstable-pod<uid>.slice`),
they are tracked and removed by path.

`ServerProcess` runs the wire-level fake API server (tests/fakes/k8s.py, HTTPS + token) and the real
OTLP gRPC receiver (tests/fakes/otlp.py) in a *separate process*, so their CPU is not the agent's. The
parent adds/deletes pods and reads the receiver's figures through a pipe.
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing as mp
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CGROUP_ROOT = "/sys/fs/cgroup"
HIERARCHIES = ("blkio", "memory", "cpu", "cpuacct", "pids", "unified")
QOS_REL = "kubepods.slice/kubepods-burstable.slice"
PREFIX = "kpt-bench-"
NODE = "kpt-bench-node"
TOKEN = "kpt-bench-token-0123456789abcdef"
CONTAINERS = ("app", "sidecar", "logs")


def _mkdirs(rel: str) -> None:
    for h in HIERARCHIES:
        os.makedirs(os.path.join(CGROUP_ROOT, h, rel), exist_ok=True)


def _join(pid: int, rel: str) -> None:
    for h in HIERARCHIES:
        with open(os.path.join(CGROUP_ROOT, h, rel, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def _rmdir_cgroup(path: str) -> None:
    """rmdir, retrying briefly while killed processes are still leaving (EBUSY)."""
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
            time.sleep(0.01)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class BenchPod:
    """One pod's API object and the kernel objects made for it."""

    obj: dict[str, Any]
    uid: str
    slice_rel: str
    scope_rels: list[str]  # sandbox first, then the containers
    netns: str = ""
    mounts: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


class NodePods:
    def __init__(self, tag: str | None = None, kernel_objects: bool = True) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.kubelet_root = Path(f"/tmp/{PREFIX}{self.tag}")
        self.kubelet_root.mkdir(parents=True, exist_ok=False)
        self.kernel_objects = kernel_objects
        self.pods: list[BenchPod] = []
        self._seq = 0

    def add(self, n: int, *, light: bool = False, busy: bool = False) -> list[BenchPod]:
        """N new pods. `light`: cgroups only (no processes, netns or volumes; for fast churn).
        `busy`: the containers' processes fork a `sleep 2` in a loop (scheduling, syscalls and page
        faults in every container cgroup, so the eBPF maps fill naturally) instead of one long sleep."""
        from tests.fakes.k8s import make_pod, status_container_ids

        made = []
        for _ in range(n):
            i = self._seq
            self._seq += 1
            uid = str(uuid.uuid4())
            obj = make_pod(f"web-{self.tag}-{i:05d}", "bench", uid=uid, qos="Burstable", containers=CONTAINERS,
                           node=NODE)
            slice_rel = f"{QOS_REL}/kubepods-burstable-pod{uid.replace('-', '_')}.slice"
            ids = status_container_ids(obj)
            scopes = [f"{slice_rel}/cri-containerd-{secrets.token_hex(32)}.scope"]
            scopes += [f"{slice_rel}/cri-containerd-{ids[c].split('://', 1)[1]}.scope" for c in CONTAINERS]
            pod = BenchPod(obj, uid, slice_rel, scopes)
            self.pods.append(pod)  # registered before anything is created: cleanup sees partial pods
            if light:
                _mkdirs(pod.slice_rel)
                for rel in pod.scope_rels:
                    _mkdirs(rel)
            elif self.kernel_objects:
                self._materialize(pod, i, busy)
            made.append(pod)
        return made

    def _materialize(self, pod: BenchPod, i: int, busy: bool) -> None:
        _mkdirs(pod.slice_rel)
        for rel in pod.scope_rels:
            _mkdirs(rel)
        pod.netns = f"{PREFIX}{self.tag}-{i}"
        _run("ip", "netns", "add", pod.netns)
        _run("ip", "-n", pod.netns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        _run("ip", "-n", pod.netns, "link", "set", "eth0", "up")
        _run("ip", "-n", pod.netns, "link", "set", "lo", "up")
        vols = self.kubelet_root / "pods" / pod.uid / "volumes"
        for plugin, name in (("kubernetes.io~empty-dir", "cache"), ("kubernetes.io~projected", "kube-api-access")):
            mnt = vols / plugin / name
            mnt.mkdir(parents=True)
            _run("mount", "-t", "tmpfs", "-o", "size=16m", f"{PREFIX}{self.tag}", str(mnt))
            pod.mounts.append(str(mnt))
            (mnt / "data").write_bytes(b"x" * 4096 * (1 + i % 7))
        for n, rel in enumerate(pod.scope_rels):
            work = ["sh", "-c", "while :; do sleep 2; done"] if busy and n else ["sleep", "3600"]
            argv = ["ip", "netns", "exec", pod.netns, "sleep", "3600"] if n == 0 else work
            proc = subprocess.Popen(argv)
            pod.procs.append(proc)
            _join(proc.pid, rel)

    def remove(self, pod: BenchPod) -> None:
        """Tear one pod's kernel objects down (the kubelet's part of a pod deletion)."""
        for proc in pod.procs:
            proc.kill()
        for proc in pod.procs:
            proc.wait()
        pod.procs.clear()
        for rel in pod.scope_rels:  # children of the busy loops, if any
            with contextlib.suppress(OSError), open(os.path.join(CGROUP_ROOT, "unified", rel, "cgroup.procs")) as f:
                for pid in f.read().split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), 9)
        for mnt in pod.mounts:
            subprocess.run(["umount", "-l", mnt], check=False, stderr=subprocess.DEVNULL)
        pod.mounts.clear()
        if pod.netns:
            subprocess.run(["ip", "netns", "del", pod.netns], check=False, stderr=subprocess.DEVNULL)
            pod.netns = ""
        for rel in [*pod.scope_rels, pod.slice_rel]:
            for h in HIERARCHIES:
                _rmdir_cgroup(os.path.join(CGROUP_ROOT, h, rel))
        shutil.rmtree(self.kubelet_root / "pods" / pod.uid, ignore_errors=True)
        if pod in self.pods:
            self.pods.remove(pod)

    def cgroup_ids(self, pods: list[BenchPod] | None = None) -> list[int]:
        """The v2 ids (directory inodes in the unified tree) of the pods' sandbox and container scopes."""
        out = []
        for pod in self.pods if pods is None else pods:
            for rel in pod.scope_rels:
                out.append(os.stat(os.path.join(CGROUP_ROOT, "unified", rel)).st_ino)
        return out

    def cleanup(self) -> None:
        for pod in list(self.pods):
            self.remove(pod)
        for rel in (QOS_REL, "kubepods.slice"):  # shared parents: only if nobody else uses them
            for h in HIERARCHIES:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(CGROUP_ROOT, h, rel))
        shutil.rmtree(self.kubelet_root, ignore_errors=True)


def leftovers(tag: str) -> list[str]:
    """Kernel objects of this tag still present (should be empty after cleanup)."""
    out = [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(f"{PREFIX}{tag}")] if os.path.isdir(
        "/run/netns") else []
    with open("/proc/self/mountinfo") as f:
        out += [f"mount {line.split()[4]}" for line in f if f"{PREFIX}{tag}" in line]
    return out


# --- the servers' process ---------------------------------------------------------------------------------


def _serve(conn: Any, workdir: str) -> None:
    os.environ["GRPC_VERBOSITY"] = "ERROR"
    from tests.fakes.k8s import FakeCluster, FakeServer
    from tests.fakes.otlp import ByteCountingProxy, OtlpReceiver
    from tests.fakes.tls import TestCA

    ca = TestCA(Path(workdir), f"{PREFIX}ca")
    cluster = FakeCluster()
    api = FakeServer(cluster, ca.issue(f"{PREFIX}api"), token=TOKEN, role="api").up()
    receiver = OtlpReceiver().start("grpc")
    proxy = ByteCountingProxy(receiver.port)  # counts the bytes the agent sends (gzip, HTTP/2 framing)
    kubeconfig = Path(workdir) / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": api.url, "certificate-authority": str(ca.ca_file)}}],
        "users": [{"name": "agent", "user": {"token": TOKEN}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "agent"}}],
    }))
    conn.send({"kubeconfig": str(kubeconfig), "endpoint": f"http://127.0.0.1:{proxy.port}"})
    first_arrival: float | None = None
    try:
        while True:
            if first_arrival is None and receiver.received:
                first_arrival = receiver.received[0].at  # time.monotonic(): one clock for all processes
            if not conn.poll(0.01):
                continue
            cmd, arg = conn.recv()
            if cmd == "add":
                for pod in arg:
                    cluster.add_pod(pod)
                conn.send(None)
            elif cmd == "delete":
                for uid in arg:
                    cluster.delete_pod(uid)
                conn.send(None)
            elif cmd == "received":  # requests received so far, and the first one's time.monotonic()
                conn.send({"arrivals": receiver.arrivals, "first": first_arrival, "wire": proxy.client_bytes})
            elif cmd == "last":  # the serialized requests received since the last "last"
                got = receiver.wait_for(0, 0.1)
                receiver.clear()
                conn.send([(r.request.SerializeToString(), r.wire_bytes) for r in got])
            elif cmd == "stop":
                break
    finally:
        proxy.close()
        receiver.stop()
        api.down()
        conn.send("stopped")


class ServerProcess:
    """The fake API server + OTLP receiver, in another process."""

    def __init__(self, workdir: Path) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(workdir)), daemon=True)
        self._proc.start()
        info = self._conn.recv()
        self.kubeconfig: str = info["kubeconfig"]
        self.endpoint: str = info["endpoint"]

    def _call(self, cmd: str, arg: Any = None) -> Any:
        self._conn.send((cmd, arg))
        return self._conn.recv()

    def add(self, pods: list[BenchPod]) -> None:
        self._call("add", [p.obj for p in pods])

    def delete(self, pods: list[BenchPod]) -> None:
        self._call("delete", [p.uid for p in pods])

    def received(self) -> dict[str, Any]:
        return dict(self._call("received"))

    def take_requests(self) -> list[tuple[bytes, int]]:
        """(serialized request, bytes on the wire) of each request received since the last call."""
        return list(self._call("last"))

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def agent_yaml(server: ServerProcess, kubelet_root: Path, profile: str, interval_ms: int = 15000) -> str:
    return f"""kpod:
  profile: {profile}
  poll-interval: {interval_ms}
  node-name: {NODE}
  discovery:
    mode: informer
    kubeconfig: {server.kubeconfig}
  bpf:
    enabled: true
  cgroup:
    root: {CGROUP_ROOT}
    proc-root: /proc
    sys-root: /sys
    kubelet-root: {kubelet_root}
  filter:
    excludeNamespaces: [kube-system]
  health:
    port: 0
"""


# --- eBPF maps ----------------------------------------------------------------------------------------------


def _fill(obj: Any, seed: int) -> None:
    """Set every integer (and integer array) field of a ctypes struct to small non-zero values."""
    import ctypes

    for name, ctype in obj._fields_:
        if issubclass(ctype, ctypes.Array):
            arr = getattr(obj, name)
            for k in range(len(arr)):
                arr[k] = (seed + k) % 5
        else:
            setattr(obj, name, seed * 7 + len(name))


def ebpf_sources(collectors: list[Any]) -> list[Any]:
    """The loaded eBPF collectors, also those inside a collector that composes eBPF and cgroup files (cpu,
    memory: their `ebpf`)."""
    from kpod_otel.bpf.collector import BpfCollector

    found = [getattr(c, "ebpf", None) or c for c in collectors]
    return [c for c in found if isinstance(c, BpfCollector) and c.available]


def populate_maps(collectors: list[Any], cgroup_ids: list[int]) -> int:
    """Write one entry per cgroup id into every per-cgroup map of every loaded eBPF collector, as if each
    container had scheduled, faulted and talked TCP. Returns the number of entries written."""
    import ctypes


    written = 0
    for c in ebpf_sources(collectors):
        program = c._program  # the bench reaches into the loaded program to write its maps
        for map_name in program.spec.cgroup_maps:
            table = program.table(map_name)
            single = getattr(table, "sLeaf", table.Leaf)
            for n, cgroup_id in enumerate(cgroup_ids):
                seed = 1 + n % 97
                if issubclass(single, ctypes.Structure):
                    cell = single()
                    _fill(cell, seed)
                else:
                    cell = single(seed * 13)
                # per-CPU maps take one value per possible CPU
                leaf = table.Leaf(*([cell] * table.total_cpu)) if hasattr(table, "sLeaf") else cell
                table[table.Key(cgroup_id)] = leaf
                written += 1
    return written
