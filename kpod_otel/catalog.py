"""The metric catalog: every metric the agent can export, declared once.

Collectors declare their instruments from here (`specs(...)` of the metrics they produce, `specs_for(collector)`),
`docs/metrics.md`'s tables are generated from here (`python -m kpod_otel.catalog [--agent]`; a test fails when
they differ), and the console and the end-to-end test read it. `tests/test_metric_contract.py` keeps a frozen
copy of the names, units and kinds, so a rename cannot pass silently.

Vocabulary: `collector` is the configuration's collector name (`collectors.<name>.enabled`, the profiles,
the `kpod.collector` attribute of the self-metrics and the log lines); "agent" marks the self-metrics.
`level` says under what a point sits: a container (with `k8s.container.name`/`container.id`; the pod's
sandbox and pod cgroups are charged to the pod without them), a pod (one point per pod), or the agent.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class InstrumentKind(StrEnum):
    COUNTER = "counter"  # monotonic cumulative sum
    UP_DOWN_COUNTER = "updowncounter"  # non-monotonic cumulative sum
    GAUGE = "gauge"
    HISTOGRAM = "histogram"  # buckets counted by the kernel, published as HistogramPoint


class Level(StrEnum):
    CONTAINER = "container"
    POD = "pod"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """What the export needs of a metric: its OTLP name, kind, unit and description."""

    name: str
    kind: InstrumentKind
    unit: str
    description: str


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: the instrument plus where it comes from and what it is attached to."""

    name: str
    kind: InstrumentKind
    unit: str
    description: str
    level: Level
    collector: str  # configuration vocabulary: cpu, tcp, memory, syscall, disk, network, filesystem, agent
    source: str  # the kernel object it is read from (Markdown, for docs/metrics.md)
    attributes: tuple[str, ...] = ()  # point attributes beyond the container's identity
    # A counter whose first increment is the whole signal (an OOM kill, a retransmit): exported as 0 for
    # every known container from the first cycle, so that rate()/increase() see the 0 -> 1 step.
    first_event: bool = False
    # The instrument kind in SDK terms, for OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=lowmemory
    # (export/temporality.py): True for a counter the agent increments itself as things happen (a
    # synchronous Counter); False for a total the kernel keeps and the agent reads (an asynchronous
    # Counter: cgroup files, interface statistics, BPF maps). Histograms are synchronous by definition.
    synchronous: bool = False

    @property
    def spec(self) -> InstrumentSpec:
        return InstrumentSpec(self.name, self.kind, self.unit, self.description)

    @property
    def otlp_data(self) -> str:
        """The OTLP `Metric.data` case this metric is exported as: "sum", "gauge" or "histogram"."""
        return _OTLP_DATA[self.kind]

    @property
    def monotonic(self) -> bool:
        """For a sum: whether it is monotonic (a counter) or not (an up-down counter)."""
        return self.kind is InstrumentKind.COUNTER


_OTLP_DATA = {InstrumentKind.COUNTER: "sum", InstrumentKind.UP_DOWN_COUNTER: "sum", InstrumentKind.GAUGE: "gauge",
              InstrumentKind.HISTOGRAM: "histogram"}

C, U, G, H = (InstrumentKind.COUNTER, InstrumentKind.UP_DOWN_COUNTER, InstrumentKind.GAUGE,
              InstrumentKind.HISTOGRAM)
CT, POD, AGENT = Level.CONTAINER, Level.POD, Level.AGENT

_DISK_ATTRS = ("system.device", "kpod.device.number")
_V2_IO = "v2 `io.stat` `{v2}`; v1 `blkio.throttle.{v1}_recursive` (BFQ fallback)"
_IFACE = "netlink `IFLA_STATS64` in the pod's netns; fallback `/proc/<pid>/net/dev`"
_FS = ("`statvfs` of mounts below the pod's `volumes/` dir; the container root if it is its own filesystem; "
       "overlay roots: usage of the writable layer only")
_FS_ATTRS = ("system.filesystem.mountpoint", "system.filesystem.type", "k8s.volume.name", "k8s.volume.type",
             "kpod.fs.layer")
_BPF_PROG = ("kpod.bpf.program",)

METRICS: tuple[MetricDef, ...] = (
    # CPU scheduling (eBPF)
    MetricDef("kpod.cpu.runqueue.latency", H, "s",
              "Time runnable tasks waited on a run queue before running (wakeup, new, preempted)",
              CT, "cpu", "eBPF `sched_wakeup`, `sched_wakeup_new`, `sched_switch`"),
    MetricDef("kpod.cpu.context.switches", C, "{switch}",
              "Context switches of the container's tasks (switched out), by kpod.switch.type",
              CT, "cpu", "eBPF `sched_switch`", ("kpod.switch.type",)),
    # TCP (eBPF)
    MetricDef("kpod.net.tcp.bytes.sent", C, "By", "TCP payload sent and acknowledged by the peer",
              CT, "tcp", "eBPF `cgroup_skb`, `sock_ops` RTT and CLOSE callbacks (socket's `bytes_acked`)"),
    MetricDef("kpod.net.tcp.bytes.received", C, "By", "TCP payload received",
              CT, "tcp", "eBPF `cgroup_skb`, `sock_ops` RTT and CLOSE callbacks (socket's `bytes_received`)"),
    MetricDef("kpod.net.tcp.retransmits", C, "{segment}", "TCP segments retransmitted",
              CT, "tcp", "eBPF `cgroup_skb` (socket's `total_retrans`)", first_event=True),
    MetricDef("kpod.net.tcp.connections", C, "{connection}", "TCP connections established (active and passive)",
              CT, "tcp", "eBPF `sock_ops` active/passive established", first_event=True),
    MetricDef("kpod.net.tcp.rtt", H, "s", "TCP round-trip time samples, one per RTT measurement of the stack",
              CT, "tcp", "eBPF `sock_ops` RTT callback"),
    # Memory events (eBPF, cgroup files as fallback)
    MetricDef("kpod.mem.oom.kills", C, "{kill}", "Processes of the container killed by the OOM killer",
              CT, "memory", "eBPF `signal_generate` (the killer's SIGKILL) + `oom:mark_victim` + "
              "`sched_process_exit`; fallback `memory.events` (v2) / `memory.oom_control` (v1) `oom_kill`",
              first_event=True),
    MetricDef("kpod.mem.major.page.faults", C, "{fault}", "Major page faults in the container",
              CT, "memory", "`memory.stat` `pgmajfault` (v1: `total_pgmajfault`), for every container",
              first_event=True),
    # Syscalls (eBPF)
    MetricDef("kpod.syscall.count", C, "{call}", "System calls completed",
              CT, "syscall", "eBPF `raw_syscalls:sys_exit` (comprehensive profile)"),
    MetricDef("kpod.syscall.errors", C, "{error}",
              "System calls that returned an error to user space (kernel-internal restarts excluded)",
              CT, "syscall", "eBPF `raw_syscalls:sys_exit`, `ret < 0` except the restart codes 512..516",
              first_event=True),
    MetricDef("kpod.syscall.latency", H, "s",
              "Time between entering and leaving a system call (blocking calls include their wait)",
              CT, "syscall", "eBPF `sys_enter` + `sys_exit` (comprehensive, or `bpf.syscall-latency`)"),
    # Disk I/O (cgroup files)
    MetricDef("kpod.disk.read.bytes", C, "By", "Bytes read from a block device by the container",
              CT, "disk", _V2_IO.format(v2="rbytes", v1="io_service_bytes"), _DISK_ATTRS),
    MetricDef("kpod.disk.written.bytes", C, "By", "Bytes written to a block device by the container",
              CT, "disk", _V2_IO.format(v2="wbytes", v1="io_service_bytes"), _DISK_ATTRS),
    MetricDef("kpod.disk.reads", C, "{operation}", "Read operations on a block device by the container",
              CT, "disk", _V2_IO.format(v2="rios", v1="io_serviced"), _DISK_ATTRS),
    MetricDef("kpod.disk.writes", C, "{operation}", "Write operations on a block device by the container",
              CT, "disk", _V2_IO.format(v2="wios", v1="io_serviced"), _DISK_ATTRS),
    # Interface network (netlink in the pod's netns)
    MetricDef("kpod.net.iface.rx.bytes", C, "By", "Bytes received on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",)),
    MetricDef("kpod.net.iface.tx.bytes", C, "By", "Bytes transmitted on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",)),
    MetricDef("kpod.net.iface.rx.packets", C, "{packet}", "Packets received on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",)),
    MetricDef("kpod.net.iface.tx.packets", C, "{packet}", "Packets transmitted on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",)),
    MetricDef("kpod.net.iface.rx.errors", C, "{error}", "Receive errors on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",), first_event=True),
    MetricDef("kpod.net.iface.tx.errors", C, "{error}", "Transmit errors on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",), first_event=True),
    MetricDef("kpod.net.iface.rx.drops", C, "{packet}", "Received packets dropped on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",), first_event=True),
    MetricDef("kpod.net.iface.tx.drops", C, "{packet}", "Transmitted packets dropped on a pod interface",
              POD, "network", _IFACE, ("network.interface.name",), first_event=True),
    # Filesystem usage (statvfs)
    MetricDef("kpod.fs.capacity.bytes", G, "By", "Size of the filesystem of a pod volume or container root",
              POD, "filesystem", _FS, _FS_ATTRS),
    MetricDef("kpod.fs.usage.bytes", G, "By", "Bytes used on the filesystem of a pod volume or container root",
              POD, "filesystem", _FS, _FS_ATTRS),
    MetricDef("kpod.fs.available.bytes", G, "By", "Bytes available to unprivileged users on that filesystem",
              POD, "filesystem", _FS, _FS_ATTRS),
    # Memory usage (cgroup files)
    MetricDef("kpod.mem.usage", G, "By", "Memory charged to the container (anonymous, page cache, kernel)",
              CT, "memory", "`memory.current` (v2) / `memory.usage_in_bytes` (v1)"),
    # CPU time, throttling and limit (cgroup files; no eBPF needed). Like every counter read from the kernel,
    # asynchronous. Throttling is not `first_event`: under a quota the file itself reports 0 before the first
    # throttled period (no zeros to add), its signal is a share of periods (a rate, not a total), and a
    # container without a quota has no throttling series at all (zeros would claim a limit it does not have).
    MetricDef("kpod.cpu.time", C, "s", "CPU time used by the container's tasks, by cpu.mode (user / system)",
              CT, "cpu", "`cpu.stat` `user_usec`/`system_usec` (v2; hybrid: the v2 tree's) / "
              "`cpuacct.usage_user`, `cpuacct.usage_sys` (ns, v1)", ("cpu.mode",)),
    MetricDef("kpod.cpu.periods", C, "{period}",
              "CFS bandwidth periods that elapsed while the container was runnable (only with a CPU limit)",
              CT, "cpu", "`cpu.stat` `nr_periods` (v2 and v1 cpu controller)"),
    MetricDef("kpod.cpu.throttled.periods", C, "{period}",
              "CFS bandwidth periods in which the container was throttled by its CPU limit",
              CT, "cpu", "`cpu.stat` `nr_throttled` (v2 and v1 cpu controller)"),
    MetricDef("kpod.cpu.throttled.time", C, "s", "Time the container's tasks were throttled by its CPU limit",
              CT, "cpu", "`cpu.stat` `throttled_usec` (v2) / `throttled_time` (ns, v1)"),
    MetricDef("kpod.cpu.limit", G, "{cpu}", "The container's CPU limit in CPUs (CFS quota / period); "
              "no point when unlimited", CT, "cpu",
              "`cpu.max` (v2) / `cpu.cfs_quota_us` \u00f7 `cpu.cfs_period_us` (v1)"),
    # Memory working set, breakdown and limit (cgroup files)
    MetricDef("kpod.mem.working_set", G, "By",
              "Memory usage minus inactive page cache, floored at 0 (as the kubelet computes it)",
              CT, "memory", "usage \u2212 `memory.stat` `inactive_file` (v1: `total_inactive_file`)"),
    MetricDef("kpod.mem.rss", G, "By", "Anonymous memory of the container",
              CT, "memory", "`memory.stat` `anon` (v2) / `total_rss` (v1)"),
    MetricDef("kpod.mem.cache", G, "By", "Page cache of the container (includes tmpfs/shmem)",
              CT, "memory", "`memory.stat` `file` (v2) / `total_cache` (v1)"),
    MetricDef("kpod.mem.limit", G, "By", "The container's memory limit; no point when unlimited",
              CT, "memory", "`memory.max` (v2) / `memory.limit_in_bytes` (v1)"),
    # Pressure stall information (PSI: the v2 tree, on hybrid nodes too)
    MetricDef("kpod.pressure.stall.time", C, "s",
              "Time in which some (type=some) or all non-idle (type=full) tasks of the container were stalled "
              "on a resource", CT, "memory", "`{cpu,memory,io}.pressure` `total=` (\u00b5s) of the v2 tree",
              ("kpod.pressure.resource", "kpod.pressure.type")),
    # The agent itself
    MetricDef("kpod.agent.cycles", C, "{cycle}", "Collection cycles run", AGENT, "agent", "the agent loop",
              synchronous=True),
    MetricDef("kpod.agent.collector.duration", G, "s", "Wall time of the last collect() per collector",
              AGENT, "agent", "the agent loop", ("kpod.collector",)),
    MetricDef("kpod.agent.cycle.duration", G, "s", "Wall time of the last collection+export cycle",
              AGENT, "agent", "the agent loop"),
    MetricDef("kpod.agent.errors", C, "{error}",
              "Errors by component and kind (parse, vanished, read, collect, export, discovery)",
              AGENT, "agent", "every component", ("kpod.component", "error.type"), synchronous=True),
    MetricDef("kpod.agent.targets", G, "{pod}", "Targets (pods or local workloads) being measured",
              AGENT, "agent", "discovery"),
    MetricDef("kpod.agent.exports", C, "{export}", "OTLP exports attempted, by result",
              AGENT, "agent", "the exporter", ("kpod.export.result",), synchronous=True),
    MetricDef("kpod.agent.export.points", G, "{point}", "Data points in the last export",
              AGENT, "agent", "the exporter"),
    MetricDef("kpod.agent.discovery.mode", G, "1", "1 for the discovery mode in use, 0 otherwise",
              AGENT, "agent", "discovery", ("kpod.discovery.mode",)),
    MetricDef("kpod.agent.discovery.mode.switches", C, "{switch}", "Discovery mode changes",
              AGENT, "agent", "discovery", ("kpod.discovery.mode",), synchronous=True),
    MetricDef("kpod.agent.bpf.program.loaded", G, "1", "1 if the BPF program is loaded and attached",
              AGENT, "agent", "the BPF loader", _BPF_PROG),
    MetricDef("kpod.agent.bpf.map.entries", G, "{entry}", "Entries in a BPF map",
              AGENT, "agent", "BPF map reads", ("kpod.bpf.program", "kpod.bpf.map")),
    MetricDef("kpod.agent.bpf.map.capacity", G, "{entry}", "Maximum entries of a BPF map",
              AGENT, "agent", "BPF map definitions", ("kpod.bpf.program", "kpod.bpf.map")),
    MetricDef("kpod.agent.bpf.map.update.failures", C, "{failure}",
              "Failed BPF map inserts (map full): events of a cgroup, or a cgroup removal, not recorded",
              AGENT, "agent", "the programs' `losses` counters", ("kpod.bpf.program", "kpod.bpf.map")),
    MetricDef("kpod.agent.bpf.program.run.time", C, "s", "Time spent in a BPF program (bpf_stats)",
              AGENT, "agent", "`/proc/self/fdinfo` of the program", _BPF_PROG),
    MetricDef("kpod.agent.bpf.program.run.count", C, "{run}", "Runs of a BPF program (bpf_stats)",
              AGENT, "agent", "`/proc/self/fdinfo` of the program", _BPF_PROG),
    MetricDef("kpod.agent.bpf.program.recursion.misses", C, "{run}",
              "Runs the kernel skipped (the program would have nested in another tracing program): "
              "events the program did not see", AGENT, "agent", "`/proc/self/fdinfo` of the program", _BPF_PROG),
    MetricDef("kpod.agent.bpf.timestamps.missing", C, "{event}",
              "Ends of a wait or syscall whose start timestamp was not in the per-task LRU map (evicted, or "
              "started before the program was loaded): not measured", AGENT, "agent",
              "the programs' `losses` counters", ("kpod.bpf.program", "kpod.bpf.map")),
    MetricDef("kpod.agent.bpf.containers.unattributed", G, "{container}",
              "Measured containers without a cgroup v2 directory: no eBPF metrics for them",
              AGENT, "agent", "the targets' cgroup v2 ids"),
    MetricDef("kpod.agent.bpf.kernel.limitation", G, "1",
              "1 for each node-wide condition under which eBPF metrics are wrong or missing",
              AGENT, "agent", "kernel version and mounted cgroup controllers", ("kpod.bpf.limitation",)),
)

CATALOG: Mapping[str, MetricDef] = MappingProxyType({m.name: m for m in METRICS})
if len(CATALOG) != len(METRICS):
    raise AssertionError("a metric is declared twice in the catalog")

# Configuration collector names, in the order the configuration documents them.
COLLECTORS: tuple[str, ...] = ("cpu", "tcp", "memory", "syscall", "disk", "network", "filesystem")


def metric(name: str) -> MetricDef:
    """The catalog entry of `name` (KeyError for a metric nobody declared)."""
    return CATALOG[name]


def specs(*names: str) -> tuple[InstrumentSpec, ...]:
    """The instrument specs of the named metrics, for a collector's `instruments()`."""
    return tuple(CATALOG[n].spec for n in names)


def for_collector(collector: str) -> tuple[MetricDef, ...]:
    """Every metric the configuration's collector `collector` (or "agent") can produce, in catalog order."""
    return tuple(m for m in METRICS if m.collector == collector)


def specs_for(collector: str) -> tuple[InstrumentSpec, ...]:
    """The instrument specs of every metric of `collector`, for its `instruments()`."""
    return tuple(m.spec for m in for_collector(collector))


def markdown_table(agent: bool = False) -> str:
    """The table of `docs/metrics.md` (workload metrics, or with agent=True the self-metrics)."""
    def attrs(m: MetricDef) -> str:
        return ", ".join(f"`{a}`" for a in m.attributes) or "\u2013"  # en dash, as the docs write it

    if agent:
        lines = ["| metric | kind | unit | attributes | meaning | source |", "|---|---|---|---|---|---|"]
        lines += [f"| `{m.name}` | {m.kind} | {m.unit} | {attrs(m)} | {m.description} | {m.source} |"
                  for m in METRICS if m.level is AGENT]
    else:
        lines = ["| metric | kind | unit | level | collector | meaning | source | extra attributes |",
                 "|---|---|---|---|---|---|---|---|"]
        lines += [f"| `{m.name}` | {m.kind} | {m.unit} | {m.level} | {m.collector} | {m.description} | {m.source} "
                  f"| {attrs(m)} |" for m in METRICS if m.level is not AGENT]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m kpod_otel.catalog [--agent]
    sys.stdout.write(markdown_table(agent="--agent" in sys.argv[1:]))
