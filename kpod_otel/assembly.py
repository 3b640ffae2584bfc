"""Builds a running agent from the configuration: discovery, cgroup mapping, collectors, sinks.

The one place that knows which configuration key feeds which constructor. `COLLECTORS` maps the
configuration's collector names (the catalog's vocabulary: cpu, tcp, memory, syscall, disk, network,
filesystem) to the classes that serve them; the libraries (`cgroup/`, `bpf/`, `procfs/`) know nothing of it.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kpod_otel.agent import Agent, CycleSink
from kpod_otel.bpf.collector import BpfCollector
from kpod_otel.bpf.program import BpfEnvironment
from kpod_otel.catalog import COLLECTORS as COLLECTOR_NAMES
from kpod_otel.cgroup.fs import CgroupFS, CgroupLayoutError
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.collector import Collector
from kpod_otel.collectors.cpu import CpuCollector
from kpod_otel.collectors.cpu_sched import CpuSchedCollector
from kpod_otel.collectors.disk_io import DiskIOCollector
from kpod_otel.collectors.filesystem import FilesystemCollector
from kpod_otel.collectors.iface_net import InterfaceNetworkCollector
from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
from kpod_otel.collectors.memory import MemoryCollector
from kpod_otel.collectors.syscall import SyscallCollector
from kpod_otel.collectors.tcp import TcpCollector
from kpod_otel.config import Config, ConfigError, DiscoveryMode, FilterConfig
from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.factory import build_provider
from kpod_otel.discovery.index import PodIndex
from kpod_otel.discovery.local import LocalCgroupProvider
from kpod_otel.export.exporter import OtlpExporter
from kpod_otel.export.otlp_settings import SettingsError, settings_from_env
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.export.resources import agent_resource_attributes, env_resource_attributes
from kpod_otel.export.selection import MetricsExporter, exporters_from_env
from kpod_otel.export.temporality import preference_from_env
from kpod_otel.health import start_health_server
from kpod_otel.model import PodInfo, Target
from kpod_otel.selfmetrics import AgentStats, SelfMetricsCollector

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_MS = 15000
DEFAULT_EXPORT_TIMEOUT_MS = 30000
DISCOVERY_WAIT_S = 10.0


def export_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _env_ms(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not allowed; allowed: whole milliseconds >= 1000") from None
    if value < 1000:
        raise ConfigError(f"{name}: {raw!r} is not allowed; allowed: whole milliseconds >= 1000")
    return value


def interval_seconds(config: Config) -> float:
    """poll-interval (YAML or KPOD_POLL_INTERVAL) wins; else OTEL_METRIC_EXPORT_INTERVAL; else 15 s."""
    if config.poll_interval_ms is not None:
        return config.poll_interval_ms / 1000.0
    return _env_ms("OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_MS) / 1000.0


class DiscoveryTargetSource:
    """The pod index's pods for this cycle (filtered, deleted pods kept one last cycle), as Targets."""

    def __init__(
        self,
        provider: PodProvider,
        resolve: Callable[[Sequence[PodInfo]], list[Target]],
        pod_filter: FilterConfig,
    ) -> None:
        self._provider = provider
        self._index = PodIndex(provider, pod_filter)
        self._resolve = resolve

    def start(self) -> None:
        self._provider.start()

    def wait_ready(self, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Give discovery a moment to make its first LIST, so the first cycle is not empty. `stop` (the
        shutdown event) ends the wait at once: SIGTERM during a slow API server must not wait it out."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout_s
        while not self._provider.healthy():
            if stop.is_set():
                return False
            if time.monotonic() >= deadline:
                log.warning("discovery (%s) not ready after %.0f s; starting anyway", self._provider.mode, timeout_s)
                return False
            stop.wait(0.1)
        return True

    def targets(self) -> list[Target]:
        return self._resolve(self._index.cycle())

    def stop(self) -> None:
        self._provider.stop()


@dataclass
class Assembled:
    agent: Agent
    pipeline: MetricsPipeline
    source: DiscoveryTargetSource
    stats: AgentStats
    config: Config
    extra_stops: list[Callable[[], None]] = field(default_factory=list)

    def start(self, discovery_wait_s: float = DISCOVERY_WAIT_S, stop: threading.Event | None = None,
              serve_health: bool = True) -> None:
        if serve_health:
            server = start_health_server(self.config.health, self.agent.health)
            if server is not None:
                self.extra_stops.append(server.stop)
        self.agent.start()
        self.source.wait_ready(discovery_wait_s, stop)
        # What exists now (modules, the Kubernetes client's classes, the loaded programs) lives as long
        # as the agent. Moved out of the cyclic collector's reach, it is no longer traversed by every
        # full collection: measured 29 ms of GC per cycle at 110 pods and 75 ms at 250 before
        # (bench/node_cycle.py, docs/performance.md). Reference counting still frees these objects.
        gc.collect()
        gc.freeze()
        # A cycle holds tens of thousands of short-lived objects (observations, attribute tuples, encoded
        # parts) that reference counting frees when it ends; at the default threshold (700) young
        # collections ran during every cycle and promoted them, and full collections then traversed the
        # series state: ~8 ms per cycle at 110 pods (docs/performance.md). Only net growth counts toward
        # the threshold, so collections now run when garbage cycles accumulate, not every cycle.
        gc.set_threshold(*GC_THRESHOLDS)

    def stop(self) -> None:
        for stop in self.extra_stops:
            try:
                stop()
            except Exception:
                log.exception("stopping a component failed")


def cgroup_fs(config: Config) -> CgroupFS:
    """The cgroup layout under `cgroup.root`, from the mount table (ConfigError when nothing is mounted)."""
    try:
        return CgroupFS.detect(config.cgroup.root)
    except CgroupLayoutError as exc:
        raise ConfigError(f"kpod.cgroup.root: {exc}") from None


def bpf_environment(config: Config, fs: CgroupFS) -> BpfEnvironment:
    """What eBPF can do on this node, with the configured program settings (`unavailable` says why not)."""
    v2_dir = fs.layout.v2_dir
    return BpfEnvironment.detect(
        cgroup_root=config.cgroup.root,
        cgroup2_root=Path(v2_dir) if v2_dir else None,
        program_dir=config.bpf.program_dir,
        enabled=config.bpf.enabled,
        max_cgroups=config.bpf.max_cgroups,
        cgroup_skb=config.bpf.cgroup_skb,
        syscall_latency=config.syscall_latency,
        enable_stats=config.bpf.enable_stats,
        layout=fs.layout,
        attach_at_root=config.discovery.mode is DiscoveryMode.LOCAL,
    )


def pod_mapper(config: Config, fs: CgroupFS, stats: AgentStats) -> PodCgroupMapper:
    return PodCgroupMapper(fs, stats, kubelet_root=config.cgroup.kubelet_root, node_name=config.node_name,
                           cluster_name=config.cluster_name)


def local_provider(config: Config, fs: CgroupFS) -> LocalCgroupProvider:
    """Pods (or local workloads) from the cgroup tree: discovery.mode local, or auto's last fallback."""
    return LocalCgroupProvider(fs, proc_root=config.cgroup.proc_root, node_name=config.node_name)


@dataclass
class CollectorParts:
    """What the collectors are built from; the node's eBPF support is resolved on first use, once."""

    config: Config
    fs: CgroupFS
    stats: AgentStats
    bpf_asked: bool = False
    _bpf: BpfEnvironment | None = None

    def bpf(self) -> BpfEnvironment | None:
        """The eBPF environment, None (said once in the log and the self-metrics) when eBPF cannot run."""
        if not self.bpf_asked:
            self.bpf_asked = True
            env = bpf_environment(self.config, self.fs)
            if env.unavailable:
                log.warning("eBPF metrics are off: %s. Running with the cgroup collectors only.",
                            env.unavailable)
                self.stats.error("bpf", "unavailable")
            else:
                env.report_limitations(self.stats)
                self._bpf = env
        return self._bpf


def _ebpf(cls: Callable[[AgentStats, BpfEnvironment], BpfCollector]) -> Callable[[CollectorParts], Collector | None]:
    def build(parts: CollectorParts) -> Collector | None:
        env = parts.bpf()
        return None if env is None else cls(parts.stats, env)
    return build


def _cpu(parts: CollectorParts) -> Collector:
    # the cgroup files always (CPU time, throttling and limit need no eBPF); eBPF's scheduling metrics when
    # its program can run
    env = parts.bpf()
    return CpuCollector(parts.fs, parts.stats, ebpf=None if env is None else CpuSchedCollector(parts.stats, env))


def _memory(parts: CollectorParts) -> Collector:
    # eBPF for the containers with a v2 id when its program runs; the cgroup files for the others (and for
    # all of them when it does not).
    env = parts.bpf()
    ebpf = None if env is None else MemoryBpfCollector(parts.stats, env)
    return MemoryCollector(parts.fs, parts.stats, ebpf=ebpf)


# configuration collector name -> how its collector is built (None: it cannot run on this node)
COLLECTORS: Mapping[str, Callable[[CollectorParts], Collector | None]] = {
    "cpu": _cpu,
    "tcp": _ebpf(TcpCollector),
    "memory": _memory,
    "syscall": _ebpf(SyscallCollector),
    "disk": lambda p: DiskIOCollector(p.fs, p.stats, sys_root=p.config.cgroup.sys_root),
    "network": lambda p: InterfaceNetworkCollector(p.stats, proc_root=p.config.cgroup.proc_root),
    "filesystem": lambda p: FilesystemCollector(p.fs, p.stats, proc_root=p.config.cgroup.proc_root,
                                                kubelet_root=p.config.cgroup.kubelet_root),
}
if tuple(COLLECTORS) != COLLECTOR_NAMES:
    raise AssertionError("the registry must serve every collector name of the catalog, in its order")


def build_collectors(config: Config, fs: CgroupFS, stats: AgentStats) -> list[Collector]:
    """The collectors the profile enables, in the catalog's order; the self-metrics collector always, last."""
    parts = CollectorParts(config, fs, stats)
    enabled = config.enabled_collectors()
    collectors = [c for name, build in COLLECTORS.items() if name in enabled and (c := build(parts)) is not None]
    if parts.bpf_asked and parts.bpf() is not None:  # programs were compiled: free the compiler's memory
        from kpod_otel.bpf.compiler_memory import release_compiler_memory

        release_compiler_memory()
    collectors.append(SelfMetricsCollector(stats))
    return collectors


def _print_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def build_sinks(exporters: frozenset[MetricsExporter], console: bool, stats: AgentStats) -> list[CycleSink]:
    """Where each cycle goes: the exporters OTEL_METRICS_EXPORTER selected (none: nowhere, the agent
    still collects), then the `--console` table."""
    sinks: list[CycleSink] = []
    if MetricsExporter.OTLP in exporters:
        try:
            settings = settings_from_env(os.environ)
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
        log.info("exporting OTLP to %s", settings.describe())
        sinks.append(OtlpExporter(settings, stats))
    if MetricsExporter.CONSOLE in exporters:
        from kpod_otel.export.otlp_json import OtlpJsonPrinter

        log.info("OTEL_METRICS_EXPORTER=console: printing each cycle to stdout as OTLP/JSON")
        sinks.append(OtlpJsonPrinter(_print_now))
    if console:
        from kpod_otel.console import TableRenderer

        sinks.append(TableRenderer(_print_now))
    return sinks


GC_THRESHOLDS = (50_000, 10, 10)


def raise_open_files_limit() -> None:
    """RLIMIT_NOFILE's soft limit up to its hard limit (no privilege needed): the cgroup collectors keep
    ~8 files open per container (`cgroup/problems.py`, `KeptFiles`; docs/architecture.md)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.info("RLIMIT_NOFILE stays at %d (hard %d): %s", soft, hard, exc)


def build_agent(config: Config, console: bool, export: bool, unknown_origin_ns: int | None = None) -> Assembled:
    """`console`: print a table every cycle; `export`: deliver to what OTEL_METRICS_EXPORTER selects;
    `unknown_origin_ns`: see MetricsPipeline (`snapshot` passes the boot time)."""
    try:
        exporters = exporters_from_env(os.environ)
        temporality = preference_from_env(os.environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    stats = AgentStats()
    raise_open_files_limit()  # before the collectors size their kept cgroup files (cgroup/problems.py)
    fs = cgroup_fs(config)
    pipeline = MetricsPipeline(
        build_collectors(config, fs, stats),
        agent_resource_attributes(config.node_name, config.cluster_name),
        stats,
        common_attributes={
            **env_resource_attributes(),
            **({"k8s.cluster.name": config.cluster_name} if config.cluster_name else {}),
        },
        unknown_origin_ns=unknown_origin_ns,
        temporality=temporality,
    )
    provider = build_provider(config, stats, local_factory=lambda: local_provider(config, fs))
    source = DiscoveryTargetSource(provider, pod_mapper(config, fs, stats).map, config.filter)
    if export and not exporters:
        log.info("OTEL_METRICS_EXPORTER=none: collecting every cycle, sending nothing")
    sinks = build_sinks(exporters if export else frozenset(), console, stats)
    export_timeout = _env_ms("OTEL_METRIC_EXPORT_TIMEOUT", DEFAULT_EXPORT_TIMEOUT_MS) / 1000.0
    agent = Agent(source, pipeline, sinks, stats, interval_seconds(config), export_timeout)
    return Assembled(agent, pipeline, source, stats, config)
