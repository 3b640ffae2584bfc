"""The metric names, units and instrument kinds are a compatibility contract: dashboards built on the
predecessor's names must keep working. The frozen copy below is compared with the catalog and
with what every collector declares, so a rename in either cannot pass silently."""

from __future__ import annotations

from pathlib import Path

from kpod_otel import catalog
from kpod_otel.assembly import COLLECTORS
from kpod_otel.catalog import CATALOG, METRICS, InstrumentSpec, Level
from kpod_otel.collector import InstrumentKind as K
from kpod_otel.collectors.cpu import CpuCollector
from kpod_otel.collectors.cpu_sched import CpuSchedCollector
from kpod_otel.collectors.disk_io import DiskIOCollector
from kpod_otel.collectors.filesystem import FilesystemCollector
from kpod_otel.collectors.iface_net import InterfaceNetworkCollector
from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
from kpod_otel.collectors.memory import MemoryCollector
from kpod_otel.collectors.syscall import SyscallCollector
from kpod_otel.collectors.tcp import TcpCollector
from kpod_otel.selfmetrics import AGENT_INSTRUMENTS

C, G, U, H = K.COUNTER, K.GAUGE, K.UP_DOWN_COUNTER, K.HISTOGRAM
REPO = Path(__file__).resolve().parent.parent

# name -> (unit, allowed kinds): the predecessor's contract, frozen here
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
    # issue 15: CPU time and throttling, memory usage and working set, pressure stall
    "kpod.cpu.time": ("s", {C}),
    "kpod.cpu.periods": ("{period}", {C}),
    "kpod.cpu.throttled.periods": ("{period}", {C}),
    "kpod.cpu.throttled.time": ("s", {C}),
    "kpod.cpu.limit": ("{cpu}", {G}),
    "kpod.mem.usage": ("By", {G}),
    "kpod.mem.working_set": ("By", {G}),
    "kpod.mem.rss": ("By", {G}),
    "kpod.mem.cache": ("By", {G}),
    "kpod.mem.limit": ("By", {G}),
    "kpod.pressure.stall.time": ("s", {C}),
}

# issue 15's point attributes, frozen like the names (dashboards select on them)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "kpod.cpu.time": ("cpu.mode",),
    "kpod.pressure.stall.time": ("kpod.pressure.resource", "kpod.pressure.type"),
}


def _declared(cls: type, *args: object, **kwargs: object) -> tuple[InstrumentSpec, ...]:
    """What a collector class declares, without building it (no kernel objects): its `instruments()`
    called on an instance whose constructor did not run, with the state `instruments()` reads."""
    obj = object.__new__(cls)
    for name, value in kwargs.items():
        object.__setattr__(obj, name, value)
    return tuple(obj.instruments())


class _Env:
    syscall_latency = True


DECLARED: dict[str, tuple[InstrumentSpec, ...]] = {
    "cpu": _declared(CpuCollector, _ebpf=None) + _declared(CpuSchedCollector),
    "tcp": _declared(TcpCollector),
    "memory": _declared(MemoryCollector) + _declared(MemoryBpfCollector),
    "syscall": _declared(SyscallCollector, _env=_Env()),
    "disk": _declared(DiskIOCollector),
    "network": _declared(InterfaceNetworkCollector),
    "filesystem": _declared(FilesystemCollector),
    "agent": AGENT_INSTRUMENTS,
}


def test_the_catalog_holds_the_contract() -> None:
    workload = {m.name: m for m in METRICS if m.level is not Level.AGENT}
    assert set(workload) == set(CONTRACT)
    for name, (unit, kinds) in CONTRACT.items():
        assert workload[name].unit == unit, name
        assert workload[name].kind in kinds, name


def test_the_catalog_holds_the_frozen_attributes() -> None:
    for name, attributes in ATTRIBUTES.items():
        assert CATALOG[name].attributes == attributes, name


def test_every_collector_declares_its_catalog_entries_unchanged() -> None:
    for collector, specs in DECLARED.items():
        assert {s.name for s in specs} == {m.name for m in catalog.for_collector(collector)}, collector
        for spec in specs:
            assert spec == CATALOG[spec.name].spec, spec.name
    declared = {s.name: (s.unit, s.kind) for specs in DECLARED.values() for s in specs}
    for name, (unit, kinds) in CONTRACT.items():
        assert declared[name][0] == unit, name
        assert declared[name][1] in kinds, name


def test_counters_read_from_the_kernel_are_asynchronous() -> None:
    """Only the agent increments counters itself as things happen (export/temporality.py: under
    lowmemory, synchronous counters go DELTA); every pod or container counter is a total the kernel
    keeps (cgroup files, interface statistics, BPF maps), read each cycle."""
    for m in METRICS:
        if m.level is not Level.AGENT:
            assert not m.synchronous, m.name


def test_one_vocabulary_for_collector_names() -> None:
    """The configuration's names are the collectors' names (the `kpod.collector`/`kpod.component` values)."""
    assert tuple(COLLECTORS) == catalog.COLLECTORS
    assert {m.collector for m in METRICS} == {*catalog.COLLECTORS, "agent"}
    classes = {"cpu": CpuCollector, "tcp": TcpCollector, "memory": MemoryCollector, "syscall": SyscallCollector,
               "disk": DiskIOCollector, "network": InterfaceNetworkCollector, "filesystem": FilesystemCollector}
    for name, cls in classes.items():
        assert cls.name == name, cls
    assert MemoryBpfCollector.name == "memory"  # memory's eBPF source counts its errors as memory's
    assert CpuSchedCollector.name == "cpu"  # and cpu's as cpu's


def test_docs_tables_are_generated_from_the_catalog() -> None:
    """docs/metrics.md holds `python -m kpod_otel.catalog` and `... --agent` verbatim."""
    text = (REPO / "docs" / "metrics.md").read_text()
    assert catalog.markdown_table() in text, "regenerate: python -m kpod_otel.catalog"
    assert catalog.markdown_table(agent=True) in text, "regenerate: python -m kpod_otel.catalog --agent"
