"""A test node for agent subprocess runs: the fake API server announcing pods whose cgroups exist for real
(systemd driver, every test hierarchy, a process in each container), and a real OTLP receiver."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cgroup.conftest import CGROUP_ROOT, CgroupTree, rmdir_cgroup
from tests.fakes.k8s import NODE, FakeCluster, FakeServer, make_pod, uid_of
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.tls import TestCA
from tests.test_e2e_discovery import TOKEN, kubeconfig

# A container process that does a little work first (scheduler and syscall events land in BPF maps
# under its cgroup), then sleeps.
BUSY_THEN_SLEEP = ["sh", "-c", "i=0; while [ $i -lt 200 ]; do i=$((i+1)); : > /dev/null; done; exec sleep 600"]

# IPv6 off inside (a per-netns sysctl): no link-local addresses appearing later, so the netns's state
# is stable for before/after comparisons.
IN_OWN_NETNS = ["unshare", "--net", "sh", "-c",
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && "
                "ip link add kpt-rel-v0 type veth peer name kpt-rel-v1 && ip link set kpt-rel-v0 up && "
                "ip link set kpt-rel-v1 up && ip addr add 192.0.2.1/24 dev kpt-rel-v0; exec sleep 600"]


def pod_base(pod: dict[str, Any]) -> str:
    uid, qos = uid_of(pod).replace("-", "_"), pod["status"]["qosClass"]
    if qos == "Guaranteed":
        return f"kubepods.slice/kubepods-pod{uid}.slice"
    q = qos.lower()
    return f"kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid}.slice"


@dataclass
class LivePod:
    pod: dict[str, Any]
    base: str
    scopes: list[str]
    procs: list[subprocess.Popen[bytes]]
    cgroup_ids: set[int]  # v2 ids (inode numbers in the unified hierarchy) of the pod and its containers

    @property
    def uid(self) -> str:
        return uid_of(self.pod)


@dataclass
class FakeNode:
    tmp: Path
    ca: TestCA
    cluster: FakeCluster
    api: FakeServer
    receiver: OtlpReceiver
    tree: CgroupTree = field(default_factory=CgroupTree)
    pods: dict[str, LivePod] = field(default_factory=dict)

    @classmethod
    def start(cls, tmp: Path, protocol: str = "grpc") -> FakeNode:
        ca = TestCA(tmp, "kpt-rel-ca")
        cluster = FakeCluster()
        api = FakeServer(cluster, ca.issue("kpt-rel-api"), token=TOKEN, role="api").up()
        receiver = OtlpReceiver().start(protocol)
        return cls(tmp, ca, cluster, api, receiver)

    def add_pod(self, name: str, namespace: str = "kpt-rel", netns: bool = False, **kw: Any) -> LivePod:
        """Create the pod's cgroups with a process per container, then announce the pod. `netns`: the
        containers run in a network namespace of their own with a veth pair up (first container's)."""
        pod = make_pod(name, namespace, **kw)
        base = pod_base(pod)
        self.tree.make(base)
        scopes, procs = [], []
        for st in pod["status"]["containerStatuses"]:
            scope = self.tree.make(f"{base}/cri-containerd-{st['containerID'].split('://', 1)[1]}.scope")
            scopes.append(scope)
            procs.append(self.tree.spawn(scope, IN_OWN_NETNS if netns else BUSY_THEN_SLEEP))
        ids = {os.stat(os.path.join(CGROUP_ROOT, "unified", rel)).st_ino for rel in (base, *scopes)}
        live = LivePod(pod, base, scopes, procs, ids)
        self.pods[live.uid] = live
        self.cluster.add_pod(pod)
        return live

    def remove_pod(self, live: LivePod) -> None:
        """Delete the pod from the API, stop its processes and remove its cgroups (as the kubelet does)."""
        self.cluster.delete_pod(live.uid)
        for proc in live.procs:
            proc.kill()
        for proc in live.procs:
            proc.wait()
            self.tree.procs.remove(proc)
        for rel in (*live.scopes, live.base):
            assert rmdir_cgroup(rel, attempts=100, pause=0.01), rel  # killed processes leave quickly
            self.tree.created.remove(rel)
        del self.pods[live.uid]

    def config(self, *, interval_ms: int = 1000, bpf: bool = True, profile: str = "standard",
               extra: str = "") -> Path:
        cfg = self.tmp / "kpod.yaml"
        cfg.write_text(f"""kpod:
  profile: {profile}
  poll-interval: {interval_ms}
  node-name: {NODE}
  discovery:
    mode: informer
    kubeconfig: {kubeconfig(self.tmp / "kubeconfig", self.api, self.ca)}
  bpf:
    enabled: {"true" if bpf else "false"}
  cgroup:
    root: /sys/fs/cgroup
    proc-root: /proc
    sys-root: /sys
    kubelet-root: {self.tmp}/kubelet
  health:
    port: 0
{extra}""")
        return cfg

    def env(self, protocol: str = "grpc") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_", "KUBERNETES_"))}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.receiver.endpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol if protocol == "grpc" else "http/protobuf"
        return env

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.tree.cleanup()
        self.receiver.stop()
        self.api.down()


def bpf_ids_of(pid: int) -> tuple[set[int], set[int]]:
    """(program ids, map ids) a process holds, from /proc/<pid>/fdinfo (the kernel's own record)."""
    progs: set[int] = set()
    maps: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            if m := re.search(r"^prog_id:\s+(\d+)", text, re.M):
                progs.add(int(m.group(1)))
            if m := re.search(r"^map_id:\s+(\d+)", text, re.M):
                maps.add(int(m.group(1)))
    return progs, maps


def loaded_prog_ids() -> set[int]:
    """Every BPF program id loaded in the kernel right now (bpftool, independent of the agent)."""
    import json

    out = subprocess.run(["bpftool", "prog", "list", "-j"], capture_output=True, text=True, check=True).stdout
    return {int(p["id"]) for p in json.loads(out)}
