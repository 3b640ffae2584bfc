"""The Prometheus rules, built from the catalog: recording rules for the per-pod quantiles and rates the
alerts use, and the alerts (each with `for:`, a `severity` label, a summary, a description and a runbook
in docs/runbooks.md). A rule that names a metric the catalog lacks is left out, and so is every rule that
reads a recorded series left out that way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scripts.monitoring.names import BY_CONTAINER, BY_POD, CLUSTER, NODE, MissingMetric, Names, quantile, rate
from scripts.monitoring.promnames import label_name

W = "5m"  # window of the recorded rates and quantiles
RUNBOOKS = "docs/runbooks.md"  # runbook_url = RUNBOOK_BASE + "#" + anchor; override with --runbook-base
BY_NODE = f"{CLUSTER}, {NODE}"


def _rate(series: str) -> str:
    return rate(series, "", W)


@dataclass(frozen=True, slots=True)
class Recording:
    record: str
    expr: str


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str


RecordingFn = Callable[[Names], Recording]
AlertFn = Callable[[Names], Alert]


# --- recording rules --------------------------------------------------------------------------------------

def _quantile_rule(metric: str, q: float, by: str = BY_POD, level: str = "pod") -> RecordingFn:
    def rule(n: Names) -> Recording:
        b = n.bucket(metric)
        family = b.removesuffix("_bucket")
        return Recording(f"{level}:{family}:p{round(q * 100)}_rate{W}",
                         quantile(q, b, "", by, W))
    return rule


def _sum_rate_rule(metric: str, by: str, level: str, histogram_count: bool = False) -> RecordingFn:
    def rule(n: Names) -> Recording:
        series = n.count(metric) if histogram_count else n(metric)
        return Recording(f"{level}:{series.removesuffix('_total')}:rate{W}", f"sum by ({by}) ({_rate(series)})")
    return rule


def runqueue_samples(n: Names) -> Recording:
    return _sum_rate_rule("kpod.cpu.runqueue.latency", BY_POD, "pod", histogram_count=True)(n)


def throttled_ratio(n: Names) -> Recording:
    thr = f"sum by ({BY_CONTAINER}) ({_rate(n('kpod.cpu.throttled.periods'))})"
    per = f"sum by ({BY_CONTAINER}) ({_rate(n('kpod.cpu.periods'))})"
    return Recording(f"container:{n('kpod.cpu.throttled.periods').removesuffix('_total')}:ratio_rate{W}",
                     f"{thr} / {per}")


def retransmits_per_mib(n: Names) -> Recording:
    retrans = f"sum by ({BY_POD}) ({_rate(n('kpod.net.tcp.retransmits'))})"
    sent = f"sum by ({BY_POD}) ({_rate(n('kpod.net.tcp.bytes.sent'))})"
    return Recording(f"pod:{n('kpod.net.tcp.retransmits').removesuffix('_total')}:per_mib_sent_rate{W}",
                     f"{retrans} / ({sent} / 1048576)")


RECORDINGS: tuple[RecordingFn, ...] = (
    _quantile_rule("kpod.cpu.runqueue.latency", 0.5),
    _quantile_rule("kpod.cpu.runqueue.latency", 0.99),
    runqueue_samples,
    _quantile_rule("kpod.net.tcp.rtt", 0.99),
    _quantile_rule("kpod.syscall.latency", 0.99),
    throttled_ratio,
    _sum_rate_rule("kpod.net.tcp.bytes.sent", BY_POD, "pod"),
    retransmits_per_mib,
    _sum_rate_rule("kpod.syscall.errors", BY_POD, "pod"),
)


# --- alerts -----------------------------------------------------------------------------------------------

def _recorded(n: Names, fn: RecordingFn) -> str:
    return fn(n).record


def oom_killed(n: Names) -> Alert:
    return Alert("KpodContainerOOMKilled",
                 f"sum by ({BY_CONTAINER}) (increase({n('kpod.mem.oom.kills')}[10m])) > 0", "1m", "warning",
                 "Container {{ $labels.k8s_namespace_name }}/{{ $labels.k8s_pod_name }}/"
                 "{{ $labels.k8s_container_name }} had a process OOM-killed",
                 "The OOM killer killed {{ $value | humanize }} process(es) of the container in the last "
                 "10 minutes.")


def cpu_throttled(n: Names) -> Alert:
    return Alert("KpodCPUThrottlingHigh", f"{_recorded(n, throttled_ratio)} > 0.25", "15m", "warning",
                 "Container {{ $labels.k8s_namespace_name }}/{{ $labels.k8s_pod_name }}/"
                 "{{ $labels.k8s_container_name }} is CPU-throttled",
                 "{{ $value | humanizePercentage }} of the container's CFS periods hit its CPU limit over "
                 f"{W} (threshold 25%).")


def runqueue_high(n: Names) -> Alert:
    p99 = _recorded(n, _quantile_rule("kpod.cpu.runqueue.latency", 0.99))
    samples = _recorded(n, runqueue_samples)
    return Alert("KpodRunQueueLatencyHigh", f"{p99} > 0.05 and on ({BY_POD}) {samples} > 1", "10m", "warning",
                 "Pod {{ $labels.k8s_namespace_name }}/{{ $labels.k8s_pod_name }} waits long for a CPU",
                 "The p99 run-queue latency is {{ $value | humanizeDuration }} (threshold 50ms): runnable tasks "
                 "wait for a CPU.")


def retransmit_ratio(n: Names) -> Alert:
    ratio = _recorded(n, retransmits_per_mib)
    sent = _recorded(n, _sum_rate_rule("kpod.net.tcp.bytes.sent", BY_POD, "pod"))
    return Alert("KpodTCPRetransmitRatioHigh", f"{ratio} > 15 and on ({BY_POD}) {sent} > 65536", "15m",
                 "warning",
                 "Pod {{ $labels.k8s_namespace_name }}/{{ $labels.k8s_pod_name }} retransmits many TCP segments",
                 "{{ $value | humanize }} segments retransmitted per MiB sent (threshold 15, ~2% of full-size "
                 "segments) while sending more than 64 KiB/s.")


def syscall_errors_jump(n: Names) -> Alert:
    now = _recorded(n, _sum_rate_rule("kpod.syscall.errors", BY_POD, "pod"))
    before = f"sum by ({BY_POD}) (rate({n('kpod.syscall.errors')}[1h] offset {W}))"
    return Alert("KpodSyscallErrorRateJump", f"{now} > 4 * {before} and {now} > 10", "10m", "warning",
                 "Pod {{ $labels.k8s_namespace_name }}/{{ $labels.k8s_pod_name }}: system call errors jumped",
                 "{{ $value | humanize }} failing system calls per second, more than 4 times the rate of the "
                 "hour before.")


def _fs_full(name: str, threshold: float, for_: str, severity: str) -> AlertFn:
    def alert(n: Names) -> Alert:
        cap = "kpod.fs.capacity.bytes"
        by = (f"{BY_POD}, {label_name('k8s.container.name')}, {n.attr(cap, 'k8s.volume.name')}, "
              f"{n.attr(cap, 'system.filesystem.mountpoint')}")
        fill = f"1 - {n('kpod.fs.available.bytes')} / {n(cap)}"
        return Alert(name, f"max by ({by}) ({fill}) > {threshold}", for_, severity,
                     "Filesystem {{ $labels.system_filesystem_mountpoint }} of pod {{ $labels.k8s_namespace_name }}"
                     "/{{ $labels.k8s_pod_name }} is almost full",
                     f"{{{{ $value | humanizePercentage }}}} used (threshold {threshold:.0%}).")
    return alert


def agent_not_exporting(n: Names) -> Alert:
    cycles = n("kpod.agent.cycles")
    return Alert("KpodAgentNotExporting",
                 f"max by ({BY_NODE}) (max_over_time({cycles}[1h])) unless on ({BY_NODE}) "
                 f"(sum by ({BY_NODE}) (increase({cycles}[3m])) > 0)", "5m", "warning",
                 "kpod-otel on node {{ $labels.k8s_node_name }} stopped reporting",
                 "No collection cycle of the node's agent reached Prometheus in the last 3 minutes "
                 "(it did within the last hour).")


def exports_failing(n: Names) -> Alert:
    m = "kpod.agent.exports"
    res = n.attr(m, "kpod.export.result")
    failed = f"sum by ({BY_NODE}) (rate({n(m)}{{{res}=\"failure\"}}[15m]))"
    total = f"sum by ({BY_NODE}) (rate({n(m)}[15m]))"
    return Alert("KpodAgentExportsFailing", f"{failed} / {total} > 0.1", "15m", "warning",
                 "kpod-otel on node {{ $labels.k8s_node_name }} fails to export",
                 "{{ $value | humanizePercentage }} of the agent's OTLP exports failed over 15 minutes.")


def bpf_not_loaded(n: Names) -> Alert:
    m = "kpod.agent.bpf.program.loaded"
    prog = n.attr(m, "kpod.bpf.program")
    return Alert("KpodBPFProgramNotLoaded", f"min by ({BY_NODE}, {prog}) ({n(m)}) == 0", "10m", "warning",
                 "BPF program {{ $labels.kpod_bpf_program }} is not loaded on node {{ $labels.k8s_node_name }}",
                 "The agent runs without this program: its metrics are missing on the node.")


def bpf_map_full(n: Names) -> Alert:
    m = "kpod.agent.bpf.map.entries"
    prog, bmap = n.attr(m, "kpod.bpf.program"), n.attr(m, "kpod.bpf.map")
    ratio = f"{n(m)} / {n('kpod.agent.bpf.map.capacity')}"
    return Alert("KpodBPFMapAlmostFull", f"max by ({BY_NODE}, {prog}, {bmap}) ({ratio}) > 0.9", "10m", "warning",
                 "BPF map {{ $labels.kpod_bpf_program }}/{{ $labels.kpod_bpf_map }} on node "
                 "{{ $labels.k8s_node_name }} is almost full",
                 "{{ $value | humanizePercentage }} of the map's entries are used; new cgroups will not be "
                 "counted once it is full.")


def bpf_map_inserts_failing(n: Names) -> Alert:
    m = "kpod.agent.bpf.map.update.failures"
    prog, bmap = n.attr(m, "kpod.bpf.program"), n.attr(m, "kpod.bpf.map")
    return Alert("KpodBPFMapInsertsFailing",
                 f"sum by ({BY_NODE}, {prog}, {bmap}) (increase({n(m)}[10m])) > 0", "5m", "warning",
                 "BPF map {{ $labels.kpod_bpf_program }}/{{ $labels.kpod_bpf_map }} on node "
                 "{{ $labels.k8s_node_name }} refuses inserts",
                 "{{ $value | humanize }} inserts failed in the last 10 minutes: events were not counted.")


ALERTS: tuple[AlertFn, ...] = (
    oom_killed, cpu_throttled, runqueue_high, retransmit_ratio, syscall_errors_jump,
    _fs_full("KpodFilesystemAlmostFull", 0.9, "15m", "warning"),
    _fs_full("KpodFilesystemAlmostFull", 0.97, "5m", "critical"),
    agent_not_exporting, exports_failing, bpf_not_loaded, bpf_map_full, bpf_map_inserts_failing,
)


def anchor(heading: str) -> str:
    """The anchor GitHub and most Markdown renderers give a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def rule_groups(names: Names, runbook_base: str = RUNBOOKS) -> list[dict[str, Any]]:
    """The `groups:` of a Prometheus rule file for this catalog."""
    recordings: list[dict[str, Any]] = []
    for rfn in RECORDINGS:
        try:
            r = rfn(names)
        except MissingMetric:
            continue
        recordings.append({"record": r.record, "expr": r.expr})
    alerts: list[dict[str, Any]] = []
    for afn in ALERTS:
        try:
            a = afn(names)
        except MissingMetric:
            continue
        alerts.append({"alert": a.name, "expr": a.expr, "for": a.for_, "labels": {"severity": a.severity},
                       "annotations": {"summary": a.summary, "description": a.description,
                                       "runbook_url": f"{runbook_base}#{anchor(a.name)}"}})
    return [{"name": "kpod-otel.recording", "rules": recordings}, {"name": "kpod-otel.alerts", "rules": alerts}]
