"""TCP metrics per cgroup: loopback traffic between cgroups, and retransmits across a lossy veth pair.

On loopback the receiver's softirq runs in the *sender's* task context, so a program charging
bpf_get_current_cgroup_id() would give B's received bytes to A: these tests catch exactly that.

Tolerance for bytes: +0..1 per connection and direction. Bytes sent are what the peer acknowledged
(bytes_acked) and bytes received what arrived in order (bytes_received): payload only, no headers, no
retransmitted copies; but these kernel counters move in TCP sequence space, where a FIN counts as one
byte (the SYN's byte is excluded: counting starts at ESTABLISHED). Every value is charged at the socket's
next packet, and the FIN exchange after the last data provides one.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpod_otel.bpf.program import BpfEnvironment
from kpod_otel.collector import CollectorSnapshot
from kpod_otel.collectors.tcp import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CONNECTIONS,
    RETRANSMITS,
    RTT,
    TcpCollector,
)
from kpod_otel.model import Target
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import Cgroup, CgroupFactory, Workload, histogram, target_for, value
from tests.conftest import require

CONNS, PAYLOAD, REPLY = 3, 200_000, 1_000

SERVER = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen()
for _ in range(int(sys.argv[3])):
    conn, _ = srv.accept()
    got = 0
    while got < int(sys.argv[4]):
        data = conn.recv(65536)
        if not data:
            break
        got += len(data)
    conn.sendall(b"r" * int(sys.argv[5]))
    while conn.recv(65536):
        pass
    conn.close()
srv.close()
"""

CLIENT = """
import socket, struct, time
min_rtts = []
for _ in range(int(sys.argv[3])):
    for attempt in range(500):
        try:
            c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
            break
        except ConnectionRefusedError:
            time.sleep(0.01)
    c.sendall(b"x" * int(sys.argv[4]))
    got = 0
    while got < int(sys.argv[5]):
        got += len(c.recv(65536))
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    min_rtts.append(struct.unpack_from("I", info, 148)[0])  # tcpi_min_rtt, us
    c.close()
if len(sys.argv) > 6:
    open(sys.argv[6], "w").write(str(min(min_rtts)))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def exchange(collector: TcpCollector, server: Workload, client: Workload, *, server_in: Cgroup, client_in: Cgroup,
             targets: list[Target]) -> CollectorSnapshot:
    """Run one round of a server and its client, each in its own cgroup, then read the collector once."""
    try:
        server_in.add(server.pid)
        client_in.add(client.pid)
        server.start()
        client.run()
        server.wait()
        return collector.collect(targets)
    finally:
        server.stop()
        client.stop()

def test_loopback_bytes_connections_rtt(tcp_collector: TcpCollector, cgroups: CgroupFactory,
                                        tmp_path: Path) -> None:
    a, b = cgroups.make("tcp-a"), cgroups.make("tcp-b")
    ta, tb = target_for("a", a), target_for("b", b)
    args = ("127.0.0.1", str(free_port()), str(CONNS), str(PAYLOAD), str(REPLY))
    min_rtt_file = tmp_path / "min_rtt"
    snap = exchange(tcp_collector, Workload(SERVER, *args), Workload(CLIENT, *args, str(min_rtt_file)),
                    server_in=b, client_in=a, targets=[ta, tb])
    assert 0 <= value(snap, ta, BYTES_SENT) - CONNS * PAYLOAD <= CONNS
    assert 0 <= value(snap, tb, BYTES_RECEIVED) - CONNS * PAYLOAD <= CONNS
    assert 0 <= value(snap, tb, BYTES_SENT) - CONNS * REPLY <= CONNS
    assert 0 <= value(snap, ta, BYTES_RECEIVED) - CONNS * REPLY <= CONNS
    assert value(snap, ta, CONNECTIONS) == CONNS  # active opens
    assert value(snap, tb, CONNECTIONS) == CONNS  # passive opens, charged to the listener's cgroup
    assert value(snap, ta, RETRANSMITS) == value(snap, tb, RETRANSMITS) == 0
    for t in (ta, tb):
        h = histogram(snap, t, RTT)
        assert h is not None and h.count > 0 and sum(h.bucket_counts) == h.count
        assert 0 < h.sum / h.count < 0.2  # loopback: well below 200 ms
    # The kernel's own minimum of the client's RTT samples (tcp_info, us): no sample of ours is below it.
    h = histogram(snap, ta, RTT)
    assert h is not None
    lowest = next(i for i, c in enumerate(h.bucket_counts) if c)
    min_rtt_s = int(min_rtt_file.read_text()) / 1e6
    assert lowest == len(h.bounds) or min_rtt_s <= h.bounds[lowest]


# The client half-closes after its request; the server reads to EOF, replies and closes, corked, so that
# reply and FIN leave in one segment. The client's one ACK of both reaches the server in LAST_ACK, where
# the socket closes on it: no later packet of that socket passes cgroup_skb (which sees a packet before
# TCP processes it), so only sock_ops (RTT or CLOSE) can charge the reply.
HALF_CLOSE_SERVER = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen()
for _ in range(int(sys.argv[3])):
    conn, _ = srv.accept()
    while conn.recv(65536):
        pass
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    conn.sendall(b"r" * int(sys.argv[5]))
    conn.close()
srv.close()
"""

HALF_CLOSE_CLIENT = """
import socket, time
for _ in range(int(sys.argv[3])):
    for attempt in range(500):
        try:
            c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
            break
        except ConnectionRefusedError:
            time.sleep(0.01)
    c.sendall(b"x" * int(sys.argv[4]))
    c.shutdown(socket.SHUT_WR)
    got = 0
    while True:
        data = c.recv(65536)
        if not data:
            break
        got += len(data)
    assert got == int(sys.argv[5])
    c.close()
"""


def test_reply_acked_only_as_the_socket_closes(tcp_collector: TcpCollector, cgroups: CgroupFactory) -> None:
    a, b = cgroups.make("lastack-a"), cgroups.make("lastack-b")
    ta, tb = target_for("a", a), target_for("b", b)
    args = ("127.0.0.1", str(free_port()), str(CONNS), "500", "700")
    snap = exchange(tcp_collector, Workload(HALF_CLOSE_SERVER, *args), Workload(HALF_CLOSE_CLIENT, *args),
                    server_in=b, client_in=a, targets=[ta, tb])
    # Bytes the test sent, + at most 1 per connection for the FIN (sequence space).
    assert 0 <= value(snap, tb, BYTES_SENT) - CONNS * 700 <= CONNS
    assert 0 <= value(snap, ta, BYTES_RECEIVED) - CONNS * 700 <= CONNS
    assert 0 <= value(snap, ta, BYTES_SENT) - CONNS * 500 <= CONNS
    assert 0 <= value(snap, tb, BYTES_RECEIVED) - CONNS * 500 <= CONNS


def test_cgroup_programs_cover_only_the_pods_cgroup(bpf_env: BpfEnvironment, cgroups: CgroupFactory) -> None:
    """Attached to a pods cgroup (here a test cgroup standing for kubepods), the programs see the sockets
    of the cgroups below it and no others: traffic of the rest of the node costs nothing."""
    pods = cgroups.make("pods")
    inside = Cgroup(pods.path / "pod-a")
    inside.path.mkdir()
    cgroups.made.append(inside)
    outside = cgroups.make("node-daemon")
    env = dataclasses.replace(bpf_env, attach_cgroup=pods.path, said=set())
    tcp = TcpCollector(AgentStats(), env)
    ta, tb = target_for("a", inside), target_for("b", outside)
    args = ("127.0.0.1", str(free_port()), "2", str(PAYLOAD), str(REPLY))
    server, client = Workload(SERVER, *args), Workload(CLIENT, *args)
    try:
        assert tcp.available, tcp.unavailable_reason
        outside.add(server.pid)
        inside.add(client.pid)
        server.start()
        client.run()
        server.wait()
        snap = tcp.collect([ta, tb])
    finally:
        server.stop()
        client.stop()
        tcp.close()
    assert 0 <= value(snap, ta, BYTES_SENT) - 2 * PAYLOAD <= 2
    assert 0 <= value(snap, ta, BYTES_RECEIVED) - 2 * REPLY <= 2
    assert value(snap, ta, CONNECTIONS) == 2
    assert tb.key not in snap.points  # the server's sockets passed no program
    assert not snap.histograms.get(tb.key)


# --- retransmits on a lossy veth pair between two test namespaces ------------------------------------


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def retrans_segs(netns: str) -> int:
    lines = [ln.split() for ln in sh("ip", "netns", "exec", netns, "cat", "/proc/net/snmp").splitlines()
             if ln.startswith("Tcp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RetransSegs")])


@pytest.fixture
def lossy_pair() -> Iterator[tuple[str, str]]:
    """Namespaces kpt-bpf-c-* (198.51.100.1) and kpt-bpf-s-* (198.51.100.2) joined by a veth pair; the
    server side drops 20% of its incoming data segments with nftables (this kernel has no netem)."""
    require(shutil.which("ip") is not None and shutil.which("nft") is not None, "needs iproute2 and nftables")
    tag = uuid.uuid4().hex[:6]
    cns, sns = f"kpt-bpf-c-{tag}", f"kpt-bpf-s-{tag}"
    cif, sif = f"kptbc{tag}", f"kptbs{tag}"
    try:
        sh("ip", "netns", "add", cns)
        sh("ip", "netns", "add", sns)
        sh("ip", "link", "add", cif, "netns", cns, "type", "veth", "peer", "name", sif, "netns", sns)
        for ns, ifname, addr in ((cns, cif, "198.51.100.1/24"), (sns, sif, "198.51.100.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if shutil.which("ethtool"):  # small segments: every drop hits one segment
                subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", ifname, "gso", "off",
                                "tso", "off", "gro", "off"], capture_output=True)
        sh("ip", "netns", "exec", sns, "nft", "add table inet kpt_bpf")
        sh("ip", "netns", "exec", sns, "nft",
           "add chain inet kpt_bpf in { type filter hook input priority 0 ; }")
        sh("ip", "netns", "exec", sns, "nft",
           "add rule inet kpt_bpf in tcp dport 5001 meta length > 100 numgen random mod 10 < 2 drop")
        yield cns, sns
    finally:
        for ns in (cns, sns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_retransmits_match_snmp(tcp_collector: TcpCollector, cgroups: CgroupFactory,
                                lossy_pair: tuple[str, str]) -> None:
    cns, sns = lossy_pair
    a, b = cgroups.make("rt-a"), cgroups.make("rt-b")
    ta, tb = target_for("a", a), target_for("b", b)
    args = ("198.51.100.2", "5001", "2", "300000", "100")
    server = Workload(SERVER, *args, netns=sns)
    client = Workload(CLIENT, *args, netns=cns)
    try:
        b.add(server.pid)
        a.add(client.pid)
        before = retrans_segs(cns), retrans_segs(sns)
        server.start()
        client.run(timeout=120)
        server.wait()
        after = retrans_segs(cns), retrans_segs(sns)
        snap = tcp_collector.collect([ta, tb])
    finally:
        server.stop()
        client.stop()
    truth_client, truth_server = after[0] - before[0], after[1] - before[1]
    assert truth_client > 10  # the drops worked
    assert value(snap, ta, RETRANSMITS) == truth_client
    assert value(snap, tb, RETRANSMITS) == truth_server
    assert 0 <= value(snap, ta, BYTES_SENT) - 2 * 300000 <= 2
    assert 0 <= value(snap, tb, BYTES_RECEIVED) - 2 * 300000 <= 2

