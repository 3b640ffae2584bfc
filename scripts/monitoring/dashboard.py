"""The Grafana dashboard, built from the catalog.

Rows of hand-written panels (each a function of `Names`, left out when it names a metric the catalog lacks),
then one row with a generic panel for every catalog metric no hand-written panel shows, so a metric added
to the catalog is on the dashboard without anyone writing a panel for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kpod_otel.catalog import InstrumentKind, Level
from scripts.monitoring.names import (
    BY_CONTAINER,
    BY_POD,
    CLUSTER,
    CONTAINER,
    NAMESPACE,
    NODE,
    POD,
    SEL_AGENT,
    SEL_CONTAINER,
    SEL_POD,
    MissingMetric,
    Names,
    quantile,
    rate,
)
from scripts.monitoring.promnames import PromMetric, label_name

UID = "kpod-otel-pods"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11; newer Grafana migrates it on load
RI = "$__rate_interval"
POD_LEGEND = f"{{{{{NAMESPACE}}}}}/{{{{{POD}}}}}"
CONTAINER_LEGEND = f"{POD_LEGEND}/{{{{{CONTAINER}}}}}"
# The metric that every container has in every profile (cgroup files, no eBPF needed) lists the
# namespaces, pods and containers of the variables; the first one the catalog has is used.
VARIABLE_SOURCES = ("kpod.cpu.time", "kpod.cpu.context.switches")


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    heatmap: bool = False
    axis_label: str = ""


PanelFn = Callable[[Names], Panel]


def _p(title: str, description: str, unit: str, *queries: tuple[str, str], axis_label: str = "") -> Panel:
    return Panel(title, description, tuple(Query(e, lg) for e, lg in queries), unit, axis_label=axis_label)


# --- CPU --------------------------------------------------------------------------------------------------

def runqueue_heatmap(n: Names) -> Panel:
    b = n.bucket("kpod.cpu.runqueue.latency")
    return Panel("Run-queue latency", "Time runnable tasks of the selected containers waited for a CPU "
                 "(all samples of the selection, per bucket).",
                 (Query(f"sum by (le) ({rate(b, SEL_CONTAINER, RI)})", "{{le}}"),), "s", heatmap=True)


def runqueue_quantiles(n: Names) -> Panel:
    b = n.bucket("kpod.cpu.runqueue.latency")
    return _p("Run-queue latency p50 / p99 by pod", "Quantiles of the wait for a CPU, per pod.", "s",
              (quantile(0.5, b, SEL_CONTAINER, BY_POD, RI), f"p50 {POD_LEGEND}"),
              (quantile(0.99, b, SEL_CONTAINER, BY_POD, RI), f"p99 {POD_LEGEND}"))


def context_switches(n: Names) -> Panel:
    m = "kpod.cpu.context.switches"
    t = n.attr(m, "kpod.switch.type")
    return _p("Context switches by type", "Voluntary (blocked, slept) and involuntary (preempted) switches.",
              "ops", (f"sum by ({BY_POD}, {t}) ({rate(n(m), SEL_CONTAINER, RI)})", f"{POD_LEGEND} {{{{{t}}}}}"))


def cpu_time(n: Names) -> Panel:
    m = "kpod.cpu.time"
    mode = n.attr(m, "cpu.mode")
    return _p("CPU time by mode", "CPU seconds per second (cores), user and system.", "short",
              (f"sum by ({BY_CONTAINER}, {mode}) ({rate(n(m), SEL_CONTAINER, RI)})",
               f"{CONTAINER_LEGEND} {{{{{mode}}}}}"), axis_label="cores")


def cpu_usage_of_limit(n: Names) -> Panel:
    used = f"sum by ({BY_CONTAINER}) ({rate(n('kpod.cpu.time'), SEL_CONTAINER, RI)})"
    limit = f"sum by ({BY_CONTAINER}) ({n('kpod.cpu.limit')}{{{SEL_CONTAINER}}})"
    return _p("CPU usage / limit", "CPU time per second over the CFS limit (containers with a limit only).",
              "percentunit", (f"{used} / {limit}", CONTAINER_LEGEND))


def cpu_throttled_share(n: Names) -> Panel:
    thr = f"sum by ({BY_CONTAINER}) ({rate(n('kpod.cpu.throttled.periods'), SEL_CONTAINER, RI)})"
    per = f"sum by ({BY_CONTAINER}) ({rate(n('kpod.cpu.periods'), SEL_CONTAINER, RI)})"
    return _p("CPU throttled share of periods", "CFS periods in which the container hit its quota.",
              "percentunit", (f"{thr} / {per}", CONTAINER_LEGEND))


def cpu_throttled_time(n: Names) -> Panel:
    return _p("CPU throttled time", "Seconds per second the container's tasks were held back by the quota.",
              "short", (f"sum by ({BY_CONTAINER}) ({rate(n('kpod.cpu.throttled.time'), SEL_CONTAINER, RI)})",
                        CONTAINER_LEGEND), axis_label="s/s")


# --- memory -----------------------------------------------------------------------------------------------

def oom_kills(n: Names) -> Panel:
    return _p("OOM kills", "Processes killed by the OOM killer, per container.", "short",
              (f"sum by ({BY_CONTAINER}) (increase({n('kpod.mem.oom.kills')}{{{SEL_CONTAINER}}}[{RI}]))",
               CONTAINER_LEGEND))


def major_faults(n: Names) -> Panel:
    return _p("Major page faults", "Page faults that had to read from disk, per pod.", "ops",
              (f"sum by ({BY_POD}) ({rate(n('kpod.mem.major.page.faults'), SEL_CONTAINER, RI)})", POD_LEGEND))


def memory_working_set(n: Names) -> Panel:
    return _p("Memory working set", "Usage minus inactive file pages, as the kubelet evicts by.", "bytes",
              (f"sum by ({BY_CONTAINER}) ({n('kpod.mem.working_set')}{{{SEL_CONTAINER}}})", CONTAINER_LEGEND))


def memory_usage(n: Names) -> Panel:
    return _p("Memory usage, RSS and cache by pod", "Charged memory, anonymous memory and page cache.", "bytes",
              *[(f"sum by ({BY_POD}) ({n(m)}{{{SEL_CONTAINER}}})", f"{what} {POD_LEGEND}")
                for m, what in (("kpod.mem.usage", "usage"), ("kpod.mem.rss", "rss"), ("kpod.mem.cache", "cache"))])


def memory_of_limit(n: Names) -> Panel:
    ws = f"sum by ({BY_CONTAINER}) ({n('kpod.mem.working_set')}{{{SEL_CONTAINER}}})"
    limit = f"sum by ({BY_CONTAINER}) ({n('kpod.mem.limit')}{{{SEL_CONTAINER}}})"
    return _p("Memory working set / limit", "Close to 100% the container is reclaimed hard or OOM-killed.",
              "percentunit", (f"{ws} / {limit}", CONTAINER_LEGEND))


# --- pressure ---------------------------------------------------------------------------------------------

def _pressure(kind: str) -> PanelFn:
    def panel(n: Names) -> Panel:
        m = "kpod.pressure.stall.time"
        res, typ = n.attr(m, "kpod.pressure.resource"), n.attr(m, "kpod.pressure.type")
        sel = f'{SEL_CONTAINER}, {typ}="{kind}"'
        return _p(f"Pressure stall ({kind})", f"Share of wall time in which {kind} of the container's tasks "
                  "were stalled on the resource (PSI).", "percentunit",
                  (f"max by ({BY_CONTAINER}, {res}) ({rate(n(m), sel, RI)})", f"{CONTAINER_LEGEND} {{{{{res}}}}}"))
    return panel


# --- TCP --------------------------------------------------------------------------------------------------

def tcp_bytes(n: Names) -> Panel:
    return _p("TCP throughput", "Payload acknowledged by peers (sent) and received, per pod.", "Bps",
              (f"sum by ({BY_POD}) ({rate(n('kpod.net.tcp.bytes.sent'), SEL_CONTAINER, RI)})",
               f"sent {POD_LEGEND}"),
              (f"sum by ({BY_POD}) ({rate(n('kpod.net.tcp.bytes.received'), SEL_CONTAINER, RI)})",
               f"received {POD_LEGEND}"))


def tcp_retransmit_ratio(n: Names) -> Panel:
    retrans = f"sum by ({BY_POD}) ({rate(n('kpod.net.tcp.retransmits'), SEL_CONTAINER, RI)})"
    sent = f"sum by ({BY_POD}) ({rate(n('kpod.net.tcp.bytes.sent'), SEL_CONTAINER, RI)})"
    return _p("TCP retransmitted segments per MiB sent", "The agent counts retransmitted segments and "
              "acknowledged bytes, not segments sent: at a 1448-byte MSS, 1 MiB is ~724 segments, so 7 per MiB "
              "is ~1% of full-size segments.", "short", (f"{retrans} / ({sent} / 1048576)", POD_LEGEND))


def tcp_retransmits(n: Names) -> Panel:
    return _p("TCP retransmits", "Retransmitted segments per second, per pod.", "ops",
              (f"sum by ({BY_POD}) ({rate(n('kpod.net.tcp.retransmits'), SEL_CONTAINER, RI)})", POD_LEGEND))


def tcp_rtt(n: Names) -> Panel:
    b = n.bucket("kpod.net.tcp.rtt")
    return _p("TCP RTT p99 by pod", "99th percentile of the stack's smoothed RTT samples.", "s",
              (quantile(0.99, b, SEL_CONTAINER, BY_POD, RI), POD_LEGEND))


def tcp_connections(n: Names) -> Panel:
    return _p("TCP connections established", "Active and passive opens per second, per pod.", "ops",
              (f"sum by ({BY_POD}) ({rate(n('kpod.net.tcp.connections'), SEL_CONTAINER, RI)})", POD_LEGEND))


# --- interfaces -------------------------------------------------------------------------------------------

def _iface(title: str, unit: str, *metrics: str) -> PanelFn:
    def panel(n: Names) -> Panel:
        queries = []
        for m in metrics:
            ifn = n.attr(m, "network.interface.name")
            what = m.removeprefix("kpod.net.iface.")
            queries.append((f"sum by ({BY_POD}, {ifn}) ({rate(n(m), SEL_POD, RI)})",
                            f"{what} {POD_LEGEND} {{{{{ifn}}}}}"))
        return _p(title, "Pod network interfaces (in the pod's network namespace).", unit, *queries)
    return panel


# --- disk and filesystem ----------------------------------------------------------------------------------

def _disk(title: str, unit: str, *metrics: str) -> PanelFn:
    def panel(n: Names) -> Panel:
        queries = []
        for m in metrics:
            dev = n.attr(m, "system.device")
            what = m.removeprefix("kpod.disk.")
            queries.append((f"sum by ({BY_POD}, {dev}) ({rate(n(m), SEL_CONTAINER, RI)})",
                            f"{what} {POD_LEGEND} {{{{{dev}}}}}"))
        return _p(title, "Block I/O charged to the pod's containers, per device.", unit, *queries)
    return panel


def _fs_by(n: Names) -> str:
    m = "kpod.fs.capacity.bytes"
    return f"{BY_POD}, {n.attr(m, 'k8s.volume.name')}, {n.attr(m, 'system.filesystem.mountpoint')}"


def fs_fill(n: Names) -> Panel:
    by = _fs_by(n)
    avail = f"{n('kpod.fs.available.bytes')}{{{SEL_POD}}}"
    cap = f"{n('kpod.fs.capacity.bytes')}{{{SEL_POD}}}"
    mp = label_name("system.filesystem.mountpoint")
    return _p("Filesystem fill", "1 - available / capacity of each volume and container root filesystem "
              "(what is left to the pod's unprivileged writers).", "percentunit",
              (f"max by ({by}) (1 - {avail} / {cap})", f"{POD_LEGEND} {{{{{mp}}}}}"))


def fs_used(n: Names) -> Panel:
    by = _fs_by(n)
    mp = label_name("system.filesystem.mountpoint")
    return _p("Filesystem used", "Bytes used (overlay roots: the writable layer).", "bytes",
              (f"max by ({by}) ({n('kpod.fs.usage.bytes')}{{{SEL_POD}}})", f"{POD_LEGEND} {{{{{mp}}}}}"))


# --- syscalls ---------------------------------------------------------------------------------------------

def syscall_rate(n: Names) -> Panel:
    return _p("System calls", "System calls completed per second, per pod.", "ops",
              (f"sum by ({BY_POD}) ({rate(n('kpod.syscall.count'), SEL_CONTAINER, RI)})", POD_LEGEND))


def syscall_error_ratio(n: Names) -> Panel:
    err = f"sum by ({BY_POD}) ({rate(n('kpod.syscall.errors'), SEL_CONTAINER, RI)})"
    calls = f"sum by ({BY_POD}) ({rate(n('kpod.syscall.count'), SEL_CONTAINER, RI)})"
    return _p("System call error ratio", "Share of system calls that returned an error.", "percentunit",
              (f"{err} / {calls}", POD_LEGEND))


def syscall_latency(n: Names) -> Panel:
    b = n.bucket("kpod.syscall.latency")
    return _p("System call latency p99 by pod", "Blocking calls include their wait.", "s",
              (quantile(0.99, b, SEL_CONTAINER, BY_POD, RI), POD_LEGEND))


# --- the agent --------------------------------------------------------------------------------------------

def agent_cycle(n: Names) -> Panel:
    return _p("Agent cycle duration", "Wall time of the last collection + export cycle, per node.", "s",
              (f"max by ({NODE}) ({n('kpod.agent.cycle.duration')}{{{SEL_AGENT}}})", f"{{{{{NODE}}}}}"))


def agent_collectors(n: Names) -> Panel:
    m = "kpod.agent.collector.duration"
    c = n.attr(m, "kpod.collector")
    return _p("Collector duration", "Wall time of each collector's last collect, slowest node.", "s",
              (f"max by ({c}) ({n(m)}{{{SEL_AGENT}}})", f"{{{{{c}}}}}"))


def agent_errors(n: Names) -> Panel:
    m = "kpod.agent.errors"
    comp, typ = n.attr(m, "kpod.component"), n.attr(m, "error.type")
    return _p("Agent errors by component", "Errors per second by component and kind.", "ops",
              (f"sum by ({comp}, {typ}) ({rate(n(m), SEL_AGENT, RI)})", f"{{{{{comp}}}}} {{{{{typ}}}}}"))


def agent_exports(n: Names) -> Panel:
    m = "kpod.agent.exports"
    res = n.attr(m, "kpod.export.result")
    return _p("OTLP exports by result", "Exports per second; failures are reported by the next export that "
              "succeeds, so a node that stops exporting disappears instead (alert KpodAgentNotExporting).",
              "ops", (f"sum by ({NODE}, {res}) ({rate(n(m), SEL_AGENT, RI)})", f"{{{{{NODE}}}}} {{{{{res}}}}}"))


def agent_targets(n: Names) -> Panel:
    return _p("Targets and points per node", "Pods measured and data points in the last export.", "short",
              (f"max by ({NODE}) ({n('kpod.agent.targets')}{{{SEL_AGENT}}})", f"pods {{{{{NODE}}}}}"),
              (f"max by ({NODE}) ({n('kpod.agent.export.points')}{{{SEL_AGENT}}})", f"points {{{{{NODE}}}}}"))


def bpf_map_fill(n: Names) -> Panel:
    m = "kpod.agent.bpf.map.entries"
    prog, bmap = n.attr(m, "kpod.bpf.program"), n.attr(m, "kpod.bpf.map")
    ratio = f"{n(m)}{{{SEL_AGENT}}} / {n('kpod.agent.bpf.map.capacity')}{{{SEL_AGENT}}}"
    return _p("BPF map fill", "Entries over capacity of the per-cgroup maps (shared with every cgroup of the "
              "node).", "percentunit",
              (f"max by ({NODE}, {prog}, {bmap}) ({ratio})", f"{{{{{NODE}}}}} {{{{{prog}}}}}/{{{{{bmap}}}}}"))


def bpf_map_failures(n: Names) -> Panel:
    m = "kpod.agent.bpf.map.update.failures"
    prog, bmap = n.attr(m, "kpod.bpf.program"), n.attr(m, "kpod.bpf.map")
    return _p("BPF map insert failures", "Inserts the kernel refused (map full): events not counted.", "ops",
              (f"sum by ({NODE}, {prog}, {bmap}) ({rate(n(m), SEL_AGENT, RI)})",
               f"{{{{{NODE}}}}} {{{{{prog}}}}}/{{{{{bmap}}}}}"))


def bpf_recursion(n: Names) -> Panel:
    m = "kpod.agent.bpf.program.recursion.misses"
    prog = n.attr(m, "kpod.bpf.program")
    return _p("BPF recursion misses", "Program runs the kernel skipped: events the program did not see.", "ops",
              (f"sum by ({NODE}, {prog}) ({rate(n(m), SEL_AGENT, RI)})", f"{{{{{NODE}}}}} {{{{{prog}}}}}"))


def bpf_loaded(n: Names) -> Panel:
    m = "kpod.agent.bpf.program.loaded"
    prog = n.attr(m, "kpod.bpf.program")
    return _p("BPF programs loaded", "1 when loaded and attached, 0 when the agent runs without it.", "short",
              (f"min by ({NODE}, {prog}) ({n(m)}{{{SEL_AGENT}}})", f"{{{{{NODE}}}}} {{{{{prog}}}}}"))


def bpf_cpu(n: Names) -> Panel:
    m = "kpod.agent.bpf.program.run.time"
    prog = n.attr(m, "kpod.bpf.program")
    return _p("BPF program CPU time", "Kernel time in each program per second (when BPF stats are enabled).",
              "short", (f"sum by ({NODE}, {prog}) ({rate(n(m), SEL_AGENT, RI)})", f"{{{{{NODE}}}}} {{{{{prog}}}}}"),
              axis_label="s/s")


ROWS: tuple[tuple[str, tuple[PanelFn, ...]], ...] = (
    ("CPU", (runqueue_heatmap, runqueue_quantiles, context_switches, cpu_time, cpu_throttled_share,
             cpu_throttled_time, cpu_usage_of_limit)),
    ("Memory", (oom_kills, major_faults, memory_working_set, memory_usage, memory_of_limit)),
    ("Pressure stall", (_pressure("some"), _pressure("full"))),
    ("TCP", (tcp_bytes, tcp_retransmit_ratio, tcp_retransmits, tcp_rtt, tcp_connections)),
    ("Interfaces", (_iface("Interface traffic", "Bps", "kpod.net.iface.rx.bytes", "kpod.net.iface.tx.bytes"),
                    _iface("Interface packets", "pps", "kpod.net.iface.rx.packets", "kpod.net.iface.tx.packets"),
                    _iface("Interface errors and drops", "pps", "kpod.net.iface.rx.errors",
                           "kpod.net.iface.tx.errors", "kpod.net.iface.rx.drops", "kpod.net.iface.tx.drops"))),
    ("Disk", (_disk("Disk throughput", "Bps", "kpod.disk.read.bytes", "kpod.disk.written.bytes"),
              _disk("Disk operations", "iops", "kpod.disk.reads", "kpod.disk.writes"))),
    ("Filesystem", (fs_fill, fs_used)),
    ("System calls", (syscall_rate, syscall_error_ratio, syscall_latency)),
    ("Agent", (agent_cycle, agent_collectors, agent_errors, agent_exports, agent_targets, bpf_map_fill,
               bpf_map_failures, bpf_recursion, bpf_loaded, bpf_cpu)),
)


def generic_panel(pm: PromMetric) -> Panel:
    """A panel for a catalog metric no hand-written panel shows: per pod (or node) and attribute."""
    m = pm.metric
    agent = m.level is Level.AGENT
    sel = SEL_AGENT if agent else SEL_POD if m.level is Level.POD else SEL_CONTAINER
    attrs = [label_name(a) for a in m.attributes]
    by = ", ".join([NODE] if agent else [BY_POD]) + "".join(f", {a}" for a in attrs)
    legend = " ".join([f"{{{{{NODE}}}}}" if agent else POD_LEGEND] + [f"{{{{{a}}}}}" for a in attrs])
    if m.kind is InstrumentKind.HISTOGRAM:
        return _p(f"{m.name} p99", m.description, _unit(m.unit, False),
                  (quantile(0.99, f"{pm.name}_bucket", sel, by, RI), legend))
    if m.kind is InstrumentKind.COUNTER:
        return _p(f"{m.name} per second", m.description, _unit(m.unit, True),
                  (f"sum by ({by}) ({rate(pm.name, sel, RI)})", legend))
    return _p(m.name, m.description, _unit(m.unit, False), (f"max by ({by}) ({pm.name}{{{sel}}})", legend))


def _unit(unit: str, per_second: bool) -> str:
    if unit == "By":
        return "Bps" if per_second else "bytes"
    if unit == "s" and not per_second:
        return "s"
    return "short"


def panels(names: Names) -> list[tuple[str, list[Panel]]]:
    """The rows and their panels for this catalog; panels naming a missing metric are left out."""
    rows: list[tuple[str, list[Panel]]] = []
    for title, fns in ROWS:
        built = []
        for fn in fns:
            try:
                built.append(fn(names))
            except MissingMetric:
                continue
        if built:
            rows.append((title, built))
    rest = [generic_panel(pm) for pm in names.unused()]
    if rest:
        rows.append(("Other catalog metrics", rest))
    return rows


# --- Grafana JSON -----------------------------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _variable(name: str, label: str, query: str, label_name_: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": f"label_values({query}, {label_name_})", "refId": f"var-{name}"},
        "definition": f"label_values({query}, {label_name_})",
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def variables(names: Names) -> list[dict[str, Any]]:
    source = next(n for n in VARIABLE_SOURCES if n in names.catalog_names())
    pm = names.metric(source)
    src = pm.series[0]
    cycles = names("kpod.agent.cycles")
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        _variable("cluster", "Cluster", cycles, CLUSTER),
        _variable("node", "Node", f'{cycles}{{{CLUSTER}=~"$cluster"}}', NODE),
        _variable("namespace", "Namespace", f"{src}{{{SEL_AGENT}}}", NAMESPACE),
        _variable("pod", "Pod", f'{src}{{{SEL_AGENT}, {NAMESPACE}=~"$namespace"}}', POD),
        _variable("container", "Container", f"{src}{{{SEL_POD}}}", CONTAINER),
    ]


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [{"datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend, "refId": chr(ord("A") + i),
                **({"format": "heatmap"} if panel.heatmap else {})} for i, q in enumerate(panel.queries)]
    base: dict[str, Any] = {"id": pid, "title": panel.title, "description": panel.description,
                            "datasource": DATASOURCE, "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
                            "targets": targets}
    if panel.heatmap:
        return {**base, "type": "heatmap", "fieldConfig": {"defaults": {}, "overrides": []},
                "options": {"calculate": False, "yAxis": {"unit": panel.unit, "axisPlacement": "left"},
                            "rowsFrame": {"layout": "le"}, "cellGap": 1,
                            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5},
                            "tooltip": {"mode": "single", "yHistogram": True},
                            "legend": {"show": True}}}
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False}
    if panel.axis_label:
        custom["axisLabel"] = panel.axis_label
    return {**base, "type": "timeseries",
            "fieldConfig": {"defaults": {"unit": panel.unit, "min": 0, "custom": custom}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def dashboard(names: Names) -> dict[str, Any]:
    out_panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in panels(names):
        out_panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, panel in enumerate(row):
            out_panels.append(_panel_json(panel, pid, 12 * (i % 2), y + 8 * (i // 2)))
            pid += 1
        y += 8 * ((len(row) + 1) // 2)
    return {
        "uid": UID, "title": "kpod-otel: pods", "description": "Kernel metrics per pod from kpod-otel "
        "(generated from kpod_otel/catalog.py by `python -m scripts.monitoring`; do not edit by hand).",
        "tags": ["kpod-otel", "kubernetes", "ebpf"], "editable": True, "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s", "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
        "annotations": {"list": []}, "links": [],
        "templating": {"list": variables(names)},
        "panels": out_panels,
    }


def panel_exprs(dash: dict[str, Any]) -> Sequence[tuple[str, str]]:
    """(panel title, expression) of every query in a dashboard, variables' queries included."""
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", v.get("definition", ""))
        if m:
            out.append((f"variable {v['name']}", m.group(1)))
    return out
