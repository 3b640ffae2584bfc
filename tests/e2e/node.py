"""A Kubernetes-like node built from real kernel objects, for the end-to-end test.

What the kubelet and containerd would have made for a pod, made by hand on this machine:
- cgroups with systemd-driver names (`kubepods.slice/kubepods-<qos>-pod<uid_>.slice`) and containerd
  scopes (`cri-containerd-<id>.scope`) in every hierarchy the agent reads (v1 controllers for the files,
  /sys/fs/cgroup/unified for the cgroup v2 ids that eBPF attributes by): `tests.cgroup.conftest.CgroupTree`;
- a sandbox ("pause") scope holding a sleeper that lives in the pod's network namespace, as the real
  pause container does (the agent enters the pod's netns through it);
- one network namespace per pod (`ip netns add kpt-e2e-…`), pods joined by veth pairs with documentation
  addresses, static neighbours and no IPv6, so that only the test's own traffic crosses the links;
- tmpfs emptyDir volumes mounted at `<kubelet-root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`;
- workload processes (`tests.bpf.conftest.Workload`: blocked on stdin between rounds) started in the
  pod's netns and moved into a container's cgroups in every hierarchy.

Everything is named `kpt-e2e-…` (interfaces `kpte2…`, 15 characters at most) and undone by `cleanup()`,
also after a failed test: every creation registers its undo step first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bpf.conftest import Workload
from tests.cgroup.conftest import CGROUP_ROOT, HIERARCHIES, CgroupTree
from tests.cgroup.test_iface_net_real import PodNetns, ip
from tests.fakes.k8s import status_container_ids, uid_of

log = logging.getLogger(__name__)

PREFIX = "kpt-e2e-"


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def in_netns(netns: str, *cmd: str) -> str:
    return sh("ip", "netns", "exec", netns, *cmd)


def pod_cgroup_path(pod: dict[str, Any]) -> str:
    """The systemd-driver pod slice the kubelet makes (Guaranteed pods sit directly under kubepods)."""
    u = uid_of(pod).replace("-", "_")
    qos = pod["status"]["qosClass"]
    if qos == "Guaranteed":
        return f"kubepods.slice/kubepods-pod{u}.slice"
    q = qos.lower()
    return f"kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{u}.slice"


@dataclass
class NodePod:
    """One pod's kernel objects."""

    api: dict[str, Any]  # the v1 Pod the fake API server announces
    tree: CgroupTree
    path: str  # pod cgroup, relative to each hierarchy root
    containers: dict[str, str]  # container name -> cgroup path
    container_ids: dict[str, str]  # container name -> runtime id (no scheme)
    sandbox_path: str
    net: PodNetns
    volumes_dir: Path
    workloads: list[Workload] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    deleted: bool = False

    @property
    def uid(self) -> str:
        return uid_of(self.api)

    @property
    def name(self) -> str:
        return str(self.api["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.api["metadata"]["namespace"])

    def cgroup_dir(self, hierarchy: str, container: str) -> Path:
        return Path(CGROUP_ROOT, hierarchy, self.containers[container])

    def v2_id(self, container: str) -> int:
        return os.stat(self.cgroup_dir("unified", container)).st_ino


class Node:
    """Builds pods' kernel objects; `cleanup()` undoes everything in reverse order."""

    def __init__(self, kubelet_root: Path) -> None:
        self.kubelet_root = kubelet_root
        self.tag = secrets.token_hex(2)  # 4 hex: interface names stay within 15 characters
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def _on_cleanup(self, what: str, undo: Callable[[], None]) -> None:
        self._undo.append((what, undo))

    def cleanup(self) -> list[str]:
        """Run every undo step (newest first), even when some fail; return the failures."""
        failures = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep cleaning: one leftover must not cause more
                failures.append(f"{what}: {exc}")
                log.warning("cleanup of %s failed: %s", what, exc)
        return failures

    # --- pods ---------------------------------------------------------------------------------------

    def add_pod(self, api: dict[str, Any], letter: str, address: str) -> NodePod:
        """Cgroups (pod, containers, sandbox), a netns with a pause process in the sandbox scope."""
        tree = CgroupTree()
        self._on_cleanup(f"cgroups of {api['metadata']['name']}", tree.cleanup)
        path = pod_cgroup_path(api)
        tree.make(path)
        ids = {name: cid.split("://", 1)[1] for name, cid in status_container_ids(api).items()}
        containers = {name: tree.make(f"{path}/cri-containerd-{cid}.scope") for name, cid in ids.items()}
        sandbox = tree.make(f"{path}/cri-containerd-{secrets.token_hex(32)}.scope")
        netns = f"{PREFIX}{letter}-{self.tag}"
        ip("netns", "add", netns)
        self._on_cleanup(f"netns {netns}", lambda: self._delete_netns(netns))
        # no IPv6 (no autoconfiguration, router solicitations or MLD reports on the pod's links)
        in_netns(netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1")
        ip("-n", netns, "link", "set", "lo", "up")
        net = PodNetns(netns, f"kpte2{letter}{self.tag}", address, f"02:00:00:e2:e{letter[0]}:01")
        # the pause process: sandbox scope, pod netns (`ip netns exec` execs it: same pid)
        net.proc = tree.spawn(sandbox, ["ip", "netns", "exec", netns, "sleep", "600"])
        pod = NodePod(api, tree, path, containers, ids, sandbox, net,
                      self.kubelet_root / "pods" / uid_of(api) / "volumes")
        return pod

    def link(self, a: NodePod, b: NodePod) -> None:
        """A veth pair between two pods' namespaces, addresses and static neighbours (no ARP)."""
        ip("link", "add", a.net.ifname, "netns", a.net.name, "type", "veth",
           "peer", "name", b.net.ifname, "netns", b.net.name)
        for pod, peer in ((a, b), (b, a)):
            ns = ("-n", pod.net.name)
            ip(*ns, "link", "set", pod.net.ifname, "address", pod.net.mac)
            ip(*ns, "addr", "add", f"{pod.net.address}/24", "dev", pod.net.ifname)
            ip(*ns, "link", "set", pod.net.ifname, "up")
            ip(*ns, "neigh", "replace", peer.net.address, "lladdr", peer.net.mac, "dev", pod.net.ifname,
               "nud", "permanent")
            # no segmentation offloads: one nftables drop hits one MSS-sized segment
            subprocess.run(["ip", "netns", "exec", pod.net.name, "ethtool", "-K", pod.net.ifname,
                            "gso", "off", "tso", "off", "gro", "off"], capture_output=True, check=False)

    def drop_randomly(self, pod: NodePod, port: int, percent: int) -> None:
        """nftables in the pod's netns drops `percent`% of incoming data segments to `port` (no netem
        here). The table goes away with the namespace; it is also deleted explicitly."""
        table = "kpt-e2e-loss"
        in_netns(pod.net.name, "nft", f"add table inet {table}")
        self._on_cleanup(f"nft table in {pod.net.name}", lambda: self._delete_nft(pod.net.name, table))
        in_netns(pod.net.name, "nft", f"add chain inet {table} in {{ type filter hook input priority 0 ; }}")
        in_netns(pod.net.name, "nft", f"add rule inet {table} in tcp dport {port} meta length > 100 "
                 f"numgen random mod 100 < {percent} drop")

    def mount_volume(self, pod: NodePod, name: str, size_mib: int, fill_bytes: int) -> Path:
        """A tmpfs emptyDir (medium: Memory) at the kubelet's path, holding `fill_bytes` of data."""
        mountpoint = pod.volumes_dir / "kubernetes.io~empty-dir" / name
        mountpoint.mkdir(parents=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={size_mib}m", f"{PREFIX}{name}", str(mountpoint))
        pod.mounts.append(mountpoint)
        self._on_cleanup(f"mount {mountpoint}", lambda: self._umount(mountpoint))
        (mountpoint / "data").write_bytes(os.urandom(fill_bytes))
        return mountpoint

    def workload(self, pod: NodePod, container: str, code: str, *args: str) -> Workload:
        """A Workload (blocked on stdin) in the pod's netns, moved into the container's cgroups."""
        w = Workload(code, *args, netns=pod.net.name)
        pod.workloads.append(w)
        self._on_cleanup(f"workload {w.pid}", w.stop)
        self.join(w.pid, pod.containers[container])
        return w

    @staticmethod
    def join(pid: int, rel: str) -> None:
        for h in HIERARCHIES:
            Path(CGROUP_ROOT, h, rel, "cgroup.procs").write_text(f"{pid}\n")

    def throttle_rule(self, pod: NodePod, container: str, disk: str, bps: int) -> None:
        """A v1 blkio throttle rule (it only switches the v1 statistics on), removed at cleanup."""
        rules = [pod.cgroup_dir("blkio", container) / f"blkio.throttle.{kind}_bps_device"
                 for kind in ("read", "write")]

        def remove() -> None:
            for rule in rules:
                with contextlib.suppress(FileNotFoundError):  # the cgroup went with its pod
                    rule.write_text(f"{disk} 0")

        self._on_cleanup(f"throttle rules of {pod.name}", remove)
        for rule in rules:
            rule.write_text(f"{disk} {bps}")

    def delete_pod(self, pod: NodePod) -> None:
        """What the kubelet does when a pod goes: processes killed, volumes unmounted, cgroups removed."""
        for w in pod.workloads:
            w.stop()
        for mountpoint in pod.mounts:
            self._umount(mountpoint)
        pod.tree.cleanup()
        for rel in [*pod.containers.values(), pod.sandbox_path, pod.path]:
            for h in HIERARCHIES:
                assert not Path(CGROUP_ROOT, h, rel).exists(), f"{h}/{rel} is still there"
        pod.deleted = True

    # --- undo steps ---------------------------------------------------------------------------------

    @staticmethod
    def _delete_netns(netns: str) -> None:
        if Path("/run/netns", netns).exists():
            sh("ip", "netns", "del", netns)

    @staticmethod
    def _delete_nft(netns: str, table: str) -> None:
        if Path("/run/netns", netns).exists():
            subprocess.run(["ip", "netns", "exec", netns, "nft", f"delete table inet {table}"],
                           capture_output=True, check=False)

    @staticmethod
    def _umount(mountpoint: Path) -> None:
        if os.path.ismount(mountpoint):
            sh("umount", str(mountpoint))
