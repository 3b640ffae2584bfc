"""TCP per container from `ebpf/tcp.c` (cgroup_skb + sock_ops on the pods cgroup, see that file)."""

from __future__ import annotations

from collections.abc import Sequence

from kpod_otel.bpf import syscalls
from kpod_otel.bpf.attribution import Owner, group_counters, group_histograms
from kpod_otel.bpf.collector import BpfCollector
from kpod_otel.bpf.histogram import to_point
from kpod_otel.bpf.kernel import KERNEL_BPF_CMPXCHG
from kpod_otel.bpf.maps import read_counters, read_histograms
from kpod_otel.bpf.program import BpfEnvironment, CgroupAttach, ProgramSpec
from kpod_otel.catalog import specs
from kpod_otel.collector import CollectorSnapshot, InstrumentSpec

BYTES_SENT = "kpod.net.tcp.bytes.sent"
BYTES_RECEIVED = "kpod.net.tcp.bytes.received"
RETRANSMITS = "kpod.net.tcp.retransmits"
CONNECTIONS = "kpod.net.tcp.connections"
RTT = "kpod.net.tcp.rtt"

_FIELDS = ("bytes_sent", "bytes_received", "retransmits", "connections")
_METRICS = (BYTES_SENT, BYTES_RECEIVED, RETRANSMITS, CONNECTIONS)


def tcp_spec(cgroup_skb: bool) -> ProgramSpec:
    """The TCP program; `cgroup_skb` false (the kill switch) keeps it off as a whole: without the
    cgroup_skb programs no socket has an owner."""
    attach = (
        CgroupAttach("kpod_tcp_ingress", "cgroup_skb", syscalls.CGROUP_INET_INGRESS),
        CgroupAttach("kpod_tcp_egress", "cgroup_skb", syscalls.CGROUP_INET_EGRESS),
        CgroupAttach("kpod_tcp_sockops", "sock_ops", syscalls.CGROUP_SOCK_OPS),
    )
    return ProgramSpec(
        name="tcp",
        tracepoints=(),
        cgroup_attach=attach,
        failure_maps=("tcp_counts", "tcp_rtt", "sock_state"),
        cgroup_maps=("tcp_counts", "tcp_rtt"),
        disabled="" if cgroup_skb else "off: bpf.cgroup-skb is false (kill switch of cgroup_skb)",
        min_kernel=KERNEL_BPF_CMPXCHG,
        min_kernel_for="the TCP program's compare-and-swap (BPF_CMPXCHG)",
    )


class TcpCollector(BpfCollector):
    name = "tcp"

    def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
        return tcp_spec(env.cgroup_skb)

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(BYTES_SENT, BYTES_RECEIVED, RETRANSMITS, CONNECTIONS, RTT)

    def _read(self, owners: dict[int, Owner], snap: CollectorSnapshot) -> dict[str, set[int]]:
        counts = read_counters(self._program.table("tcp_counts"), _FIELDS)
        rtts = read_histograms(self._program.table("tcp_rtt"))
        for owner, row in group_counters(counts, owners).items():
            for metric, value in zip(_METRICS, row, strict=True):
                snap.add(owner.target_key, metric, value, owner.attrs())
        for owner, hist in group_histograms(rtts, owners).items():
            snap.add_histogram(owner.target_key, to_point(RTT, owner.attrs(), hist))
        return {"tcp_counts": set(counts), "tcp_rtt": set(rtts)}
