"""Building the cgroup layer from the agent's Config: one place that knows which config key feeds
which constructor, so the agent's start-up code stays a few lines.

    fs = cgroup_fs(config)
    mapper = pod_mapper(config, fs, stats)
    collectors = cgroup_collectors(config, fs, stats, ebpf_memory=bpf_memory_loaded)
    provider = local_provider(config, fs)          # discovery.mode local, or auto's last fallback
    ...
    targets = mapper.map(provider.pods())          # every cycle
"""

from __future__ import annotations

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.collector import Collector
from kpod_otel.collectors.disk_io import DiskIOCollector
from kpod_otel.collectors.filesystem import FilesystemCollector
from kpod_otel.collectors.iface_net import InterfaceNetworkCollector
from kpod_otel.collectors.memory_cgroup import MemoryCgroupCollector
from kpod_otel.config import Config
from kpod_otel.discovery.local import LocalCgroupProvider
from kpod_otel.selfmetrics import AgentStats


def cgroup_fs(config: Config, mountinfo_path: str = "/proc/self/mountinfo") -> CgroupFS:
    """Detect v1/v2/hybrid under `cgroup.root` (raises CgroupLayoutError when nothing is mounted)."""
    return CgroupFS.detect(config.cgroup.root, mountinfo_path)


def pod_mapper(config: Config, fs: CgroupFS, stats: AgentStats) -> PodCgroupMapper:
    return PodCgroupMapper(fs, stats, kubelet_root=config.cgroup.kubelet_root, node_name=config.node_name,
                           cluster_name=config.cluster_name)


def cgroup_collectors(config: Config, fs: CgroupFS, stats: AgentStats, *,
                      ebpf_memory: bool = False) -> list[Collector]:
    """The cgroup/procfs collectors the profile enables. `memory` is served by the eBPF collector when
    it is loaded (`ebpf_memory=True`) for every container with a cgroup v2 id; by the cgroup files for
    the others, and for all when eBPF memory is off."""
    enabled = config.enabled_collectors()
    collectors: list[Collector] = []
    if "disk" in enabled:
        collectors.append(DiskIOCollector(fs, stats, sys_root=config.cgroup.sys_root))
    if "network" in enabled:
        collectors.append(InterfaceNetworkCollector(stats, proc_root=config.cgroup.proc_root))
    if "filesystem" in enabled:
        collectors.append(FilesystemCollector(fs, stats, proc_root=config.cgroup.proc_root,
                                              kubelet_root=config.cgroup.kubelet_root))
    if "memory" in enabled:
        collectors.append(MemoryCgroupCollector(fs, stats, only_without_cgroup_id=ebpf_memory))
    return collectors


def local_provider(config: Config, fs: CgroupFS) -> LocalCgroupProvider:
    return LocalCgroupProvider(fs, proc_root=config.cgroup.proc_root, node_name=config.node_name)
