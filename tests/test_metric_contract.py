"""The metric names, units and instrument kinds are a compatibility contract (DESIGN §2): dashboards
built on the predecessor's names must keep working. This checks every collector's declarations."""

from __future__ import annotations

from kpod_otel.collector import InstrumentKind as K
from kpod_otel.collectors import cpu_sched, disk_io, filesystem, iface_net, mem_bpf, memory_cgroup, syscall, tcp

C, G, U, H = K.COUNTER, K.GAUGE, K.UP_DOWN_COUNTER, K.HISTOGRAM

# name -> (unit, allowed kinds), transcribed from DESIGN §2
CONTRACT: dict[str, tuple[str, set[K]]] = {
    "kpod.cpu.runqueue.latency": ("s", {H}),
    "kpod.cpu.context.switches": ("{switch}", {C}),
    "kpod.net.tcp.bytes.sent": ("By", {C}),
    "kpod.net.tcp.bytes.received": ("By", {C}),
    "kpod.net.tcp.retransmits": ("{segment}", {C}),
    "kpod.net.tcp.connections": ("{connection}", {C}),
    "kpod.net.tcp.rtt": ("s", {H}),
    "kpod.mem.oom.kills": ("{kill}", {C}),
    "kpod.mem.major.page.faults": ("{fault}", {C}),
    "kpod.syscall.count": ("{call}", {C}),
    "kpod.syscall.errors": ("{error}", {C}),
    "kpod.syscall.latency": ("s", {H}),
    "kpod.disk.read.bytes": ("By", {C}),
    "kpod.disk.written.bytes": ("By", {C}),
    "kpod.disk.reads": ("{operation}", {C}),
    "kpod.disk.writes": ("{operation}", {C}),
    "kpod.net.iface.rx.bytes": ("By", {C}),
    "kpod.net.iface.tx.bytes": ("By", {C}),
    "kpod.net.iface.rx.packets": ("{packet}", {C}),
    "kpod.net.iface.tx.packets": ("{packet}", {C}),
    "kpod.net.iface.rx.errors": ("{error}", {C}),
    "kpod.net.iface.tx.errors": ("{error}", {C}),
    "kpod.net.iface.rx.drops": ("{packet}", {C}),
    "kpod.net.iface.tx.drops": ("{packet}", {C}),
    "kpod.fs.capacity.bytes": ("By", {G, U}),
    "kpod.fs.usage.bytes": ("By", {G, U}),
    "kpod.fs.available.bytes": ("By", {G, U}),
}

SPEC_LISTS = [
    cpu_sched.INSTRUMENTS, tcp.INSTRUMENTS, mem_bpf.INSTRUMENTS, syscall.INSTRUMENTS,
    disk_io.DISK_INSTRUMENTS, iface_net.IFACE_INSTRUMENTS, filesystem.FS_INSTRUMENTS,
    memory_cgroup.MEMORY_INSTRUMENTS,
]


def test_every_seed_metric_is_declared_with_its_unit_and_kind() -> None:
    declared = {}
    for specs in SPEC_LISTS:
        for spec in specs:
            if spec.name in declared:  # the eBPF and cgroup memory collectors declare the same two
                assert declared[spec.name] == (spec.unit, spec.kind), spec.name
            declared[spec.name] = (spec.unit, spec.kind)
    assert set(declared) == set(CONTRACT)
    for name, (unit, kinds) in CONTRACT.items():
        assert declared[name][0] == unit, name
        assert declared[name][1] in kinds, name
