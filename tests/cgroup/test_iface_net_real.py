"""InterfaceNetworkCollector on real network namespaces: two test "pods" joined by a veth pair exchange
a known number of UDP datagrams; each pod's counters match what was sent and what `ip -s link` says."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kpod_otel.collectors.iface_net import IFACE_ATTR, InterfaceNetworkCollector
from kpod_otel.model import Target
from kpod_otel.selfmetrics import AgentStats
from tests.conftest import require, require_root

COUNT = 25
PAYLOAD = 1000
ETH_IP_UDP = 14 + 20 + 8
FRAME = PAYLOAD + ETH_IP_UDP


UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9))
print("ready", flush=True)
while True:
    s.recv(65536)
"""


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@dataclass
class PodNetns:
    name: str
    ifname: str
    address: str
    mac: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@pytest.fixture
def two_pods() -> Iterator[tuple[PodNetns, PodNetns]]:
    require_root()
    require(subprocess.run(["ip", "-V"], capture_output=True).returncode == 0, "needs iproute2")
    tag = secrets.token_hex(3)
    a = PodNetns(f"kpt-cg-{tag}-a", f"kptcg{tag}a", "192.0.2.1", "02:00:00:00:0a:01")
    b = PodNetns(f"kpt-cg-{tag}-b", f"kptcg{tag}b", "192.0.2.2", "02:00:00:00:0b:02")
    created: list[str] = []
    try:
        for pod in (a, b):
            ip("netns", "add", pod.name)
            created.append(pod.name)
        ip("link", "add", a.ifname, "netns", a.name, "type", "veth",
           "peer", "name", b.ifname, "netns", b.name)
        for pod, peer in ((a, b), (b, a)):
            ns = ("-n", pod.name)
            # no IPv6 autoconfiguration and no ARP: only the test's datagrams cross the link
            subprocess.run(["ip", "netns", "exec", pod.name, "sysctl", "-q", "-w",
                            f"net.ipv6.conf.{pod.ifname}.disable_ipv6=1"], check=True)
            ip(*ns, "link", "set", pod.ifname, "address", pod.mac)
            ip(*ns, "addr", "add", f"{pod.address}/24", "dev", pod.ifname)
            ip(*ns, "link", "set", pod.ifname, "up")
            ip(*ns, "link", "set", "lo", "up")
            ip(*ns, "neigh", "replace", peer.address, "lladdr", peer.mac, "dev", pod.ifname,
               "nud", "permanent")
            # the pod's process: a UDP sink, so that datagrams are not answered by ICMP unreachables
            pod.proc = subprocess.Popen(["ip", "netns", "exec", pod.name, "python3", "-c", UDP_SINK,
                                         pod.address], stdout=subprocess.PIPE)
            assert pod.proc.stdout is not None and pod.proc.stdout.readline() == b"ready\n"
        yield a, b
    finally:
        for pod in (a, b):
            if pod.proc is not None:
                pod.proc.kill()
                pod.proc.wait()
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False)


def link_stats(pod: PodNetns) -> dict[str, int]:
    (link,) = json.loads(ip("-n", pod.name, "-s", "-j", "link", "show", "dev", pod.ifname))
    s = link["stats64"]
    return {"rx.bytes": s["rx"]["bytes"], "rx.packets": s["rx"]["packets"], "rx.errors": s["rx"]["errors"],
            "rx.drops": s["rx"]["dropped"], "tx.bytes": s["tx"]["bytes"], "tx.packets": s["tx"]["packets"],
            "tx.errors": s["tx"]["errors"], "tx.drops": s["tx"]["dropped"]}


def reported(snap_points: dict[str, list[object]], ifname: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for metric, observations in snap_points.items():
        for o in observations:
            if o.attributes[IFACE_ATTR] == ifname:  # type: ignore[attr-defined]
                out[metric.removeprefix("kpod.net.iface.")] = int(o.value)  # type: ignore[attr-defined]
    return out


def send_datagrams(src: PodNetns, dst: PodNetns) -> None:
    code = (f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({COUNT}): s.sendto(b'x' * {PAYLOAD}, ('{dst.address}', 9))\n")
    subprocess.run(["ip", "netns", "exec", src.name, "python3", "-c", code], check=True)


@pytest.mark.parametrize("use_netlink", [True, False], ids=["netlink", "proc-net-dev"])
def test_pod_interface_counters(two_pods: tuple[PodNetns, PodNetns], use_netlink: bool) -> None:
    a, b = two_pods
    stats = AgentStats()
    collector = InterfaceNetworkCollector(stats, proc_root="/proc", use_netlink=use_netlink)
    targets = [Target(key="pod-a", resource={}, pids=(a.pid,)),
               Target(key="pod-b", resource={}, pids=(b.pid,))]
    try:
        before = collector.collect(targets)
        send_datagrams(a, b)
        after = collector.collect(targets)
    finally:
        collector.close()

    for pod in (a, b):
        key = f"pod-{pod.name[-1]}"
        # one interface per pod (loopback is not reported), all eight counters
        assert {o.attributes[IFACE_ATTR] for obs in after.points[key].values() for o in obs} == {pod.ifname}
        assert len(after.points[key]) == 8
        assert reported(after.points[key], pod.ifname) == link_stats(pod)  # what `ip -s link` says

    a_before, a_after = reported(before.points["pod-a"], a.ifname), reported(after.points["pod-a"], a.ifname)
    b_before, b_after = reported(before.points["pod-b"], b.ifname), reported(after.points["pod-b"], b.ifname)
    assert a_after["tx.packets"] - a_before["tx.packets"] == COUNT
    assert a_after["tx.bytes"] - a_before["tx.bytes"] == COUNT * FRAME
    assert b_after["rx.packets"] - b_before["rx.packets"] == COUNT
    assert b_after["rx.bytes"] - b_before["rx.bytes"] == COUNT * FRAME
    # nothing went the other way: no ARP (static neighbours), no IPv6, no ICMP (b listens)
    assert a_after["rx.packets"] == a_before["rx.packets"]
    assert b_after["tx.packets"] == b_before["tx.packets"]
    assert stats.total("kpod.agent.errors") == 0


def test_host_network_and_vanished_pods_report_nothing(two_pods: tuple[PodNetns, PodNetns]) -> None:
    a, _ = two_pods
    stats = AgentStats()
    collector = InterfaceNetworkCollector(stats, proc_root="/proc")
    dead = subprocess.Popen(["true"])
    dead.wait()
    targets = [
        Target(key="host-net", resource={}, pids=(a.pid,), host_network=True),
        Target(key="in-node-netns", resource={}, pids=(os.getpid(),)),  # the node's namespace
        Target(key="gone", resource={}, pids=(dead.pid,)),
        Target(key="pod-a", resource={}, pids=(dead.pid, a.pid)),  # first pid gone: the next one is used
    ]
    try:
        snap = collector.collect(targets)
        fds_after_first = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            collector.collect(targets)
        assert len(os.listdir("/proc/self/fd")) == fds_after_first  # sockets are reused, not leaked
    finally:
        collector.close()
    assert set(snap.points) == {"pod-a"}
    assert stats.get("kpod.agent.errors", **{"kpod.component": "network", "error.type": "vanished"}) == 6


WITHOUT_SYS_ADMIN = """
import json, sys
from kpod_otel.collectors.iface_net import IFACE_ATTR, InterfaceNetworkCollector
from kpod_otel.model import Target
from kpod_otel.selfmetrics import AgentStats
stats = AgentStats()
collector = InterfaceNetworkCollector(stats, proc_root="/proc", use_netlink=True)
target = Target(key="pod", resource={}, pids=(int(sys.argv[1]),))
for _ in range(3):
    snap = collector.collect([target])
collector.close()
points = {m: [(o.attributes[IFACE_ATTR], o.value) for o in obs] for m, obs in snap.points["pod"].items()}
print(json.dumps({"points": points, "netlink_errors": stats.get(
    "kpod.agent.errors", **{"kpod.component": "network", "error.type": "netlink"})}))
"""


def test_without_permission_to_enter_netns_falls_back_to_proc(two_pods: tuple[PodNetns, PodNetns]) -> None:
    a, _ = two_pods
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    # the agent without CAP_SYS_ADMIN: setns() into the pod's namespace is refused
    out = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--",
                          sys.executable, "-c", WITHOUT_SYS_ADMIN, str(a.pid)],
                         check=True, capture_output=True, text=True, cwd=os.getcwd())
    result = json.loads(out.stdout)
    assert result["netlink_errors"] == 1  # tried once, then netlink is given up
    values = {m.removeprefix("kpod.net.iface."): dict(v)[a.ifname] for m, v in result["points"].items()}
    assert values == link_stats(a)
