"""MemoryCollector (`memory`): memory usage, working set, RSS, cache, limit and pressure stall per container
from the cgroup files; OOM kills and major page faults from two sources under one name.

- Usage and limit (`CgroupFiles.memory_usage`, `.memory_stat`, `.memory_limit`): `memory.current` /
  `memory.usage_in_bytes`; working set = usage - `inactive_file` floored at 0 (the kubelet's); `anon` / `file`
  of `memory.stat` (v1: the hierarchical `total_rss` / `total_cache`); `memory.max` / `memory.limit_in_bytes`,
  no point when unlimited. Always from the files.
- Pressure stall (`CgroupFiles.pressure`): `total=` of the `some` and `full` lines of `cpu.pressure`,
  `memory.pressure` and `io.pressure` in the v2 tree (hybrid nodes have them too), for containers in it.
  They come with `memory` so that the minimal profile (cpu, disk) stays at CPU time and throttling.
- OOM kills: eBPF (`ebpf/mem.c`, `MemoryBpfCollector`), charged to the victim, for every container that has
  a cgroup v2 id; the files' `oom_kill` (v2 `memory.events`, v1 `memory.oom_control`) count the same kills
  (the tests check that both sources agree) and serve every container when the eBPF program is off or could
  not load, and otherwise the containers eBPF cannot see (no v2 id: a workload that exists only in the v1
  memory hierarchy).
- Major faults: `memory.stat` `pgmajfault` (v1: hierarchical `total_pgmajfault`) for every container, one
  definition whatever eBPF does (the perf event PAGE_FAULTS_MAJ misses faults taken through
  get_user_pages, e.g. a read of /proc/<pid>/mem or an O_DIRECT write from a file mapping; `pgmajfault`
  counts them).
Counters are the kernel's cumulative values for the cgroup's lifetime, reported as-is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kpod_otel.catalog import specs
from kpod_otel.cgroup.files import CgroupFiles
from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.problems import ErrorCounter, ProblemLog
from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentSpec
from kpod_otel.collectors.mem_bpf import MAJOR_FAULTS, OOM_KILLS, MemoryBpfCollector
from kpod_otel.model import ContainerTarget, Target

log = logging.getLogger(__name__)

__all__ = ["CACHE", "LIMIT", "MAJOR_FAULTS", "OOM_KILLS", "RSS", "STALL_TIME", "USAGE", "WORKING_SET",
           "MemoryCollector"]

USAGE = "kpod.mem.usage"
WORKING_SET = "kpod.mem.working_set"
RSS = "kpod.mem.rss"
CACHE = "kpod.mem.cache"
LIMIT = "kpod.mem.limit"
STALL_TIME = "kpod.pressure.stall.time"
PRESSURE_RESOURCE = "kpod.pressure.resource"
PRESSURE_TYPE = "kpod.pressure.type"
PRESSURE_RESOURCES = ("cpu", "memory", "io")


class MemoryCollector(Collector):
    name = "memory"

    def __init__(self, fs: CgroupFS, stats: ErrorCounter, *, ebpf: MemoryBpfCollector | None = None) -> None:
        """`ebpf`: the eBPF source, when eBPF may run on this node (it may still have failed to load)."""
        self._files = CgroupFiles(fs, ProblemLog(self.name, stats, log))
        self._ebpf = ebpf

    @property
    def ebpf(self) -> MemoryBpfCollector | None:
        return self._ebpf

    @property
    def ebpf_loaded(self) -> bool:
        return self._ebpf is not None and self._ebpf.available

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(OOM_KILLS, MAJOR_FAULTS, USAGE, WORKING_SET, RSS, CACHE, LIMIT, STALL_TIME)

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        ebpf_loaded = self.ebpf_loaded
        snap = self._ebpf.collect(targets) if self._ebpf is not None and ebpf_loaded else CollectorSnapshot()
        for target in targets:
            key = target.key
            for container in target.containers:
                rel, attrs = container.cgroup_path, container.attributes()
                usage = self._files.memory_usage(key, rel)
                if usage is None:
                    continue  # gone (or no memory cgroup): its other files would fail the same way
                stat = self._files.memory_stat(key, rel)
                if usage.value is not None:
                    snap.add(key, USAGE, usage.value, attrs)
                    if stat is not None and stat.inactive_file is not None:
                        # the kubelet's working set: what the container cannot give back without paging
                        snap.add(key, WORKING_SET, max(0, usage.value - stat.inactive_file), attrs)
                if stat is not None:
                    if stat.anon is not None:
                        snap.add(key, RSS, stat.anon, attrs)
                    if stat.file is not None:
                        snap.add(key, CACHE, stat.file, attrs)
                limit = self._files.memory_limit(key, rel)
                if limit is not None and limit.bytes is not None:
                    snap.add(key, LIMIT, limit.bytes, attrs)
                if container.cgroup_id is not None:  # PSI lives in the v2 tree
                    for resource in PRESSURE_RESOURCES:
                        pressure = self._files.pressure(key, rel, resource)
                        if pressure is not None:
                            for kind, usec in (("some", pressure.some_usec), ("full", pressure.full_usec)):
                                if usec is not None:
                                    snap.add(key, STALL_TIME, usec / 1e6,
                                             {**attrs, PRESSURE_RESOURCE: resource, PRESSURE_TYPE: kind})
                if not (ebpf_loaded and container.cgroup_id is not None):  # else eBPF's
                    events = self._files.memory_events(key, rel)
                    if events is not None and events.oom_kill is not None:
                        snap.add(key, OOM_KILLS, events.oom_kill, attrs)
                if stat is not None and stat.major_faults is not None:
                    snap.add(key, MAJOR_FAULTS, stat.major_faults, attrs)
        self._files.problems.prune(t.key for t in targets)
        return snap

    def origin_ns(self, target: Target, metric: str) -> int | None:
        """OOM kills come from eBPF (counting since its program's load) for the containers it serves and
        from the files (since the cgroup's creation) for the others; one start time per pod and metric: eBPF's
        when it serves every container of the pod, the pod's creation when it serves none, and unknown (the
        first observation is the baseline) when the pod mixes both. A restarted agent's empty maps must not
        continue the previous agent's series under the pod's creation time."""
        if metric != OOM_KILLS or self._ebpf is None or not self.ebpf_loaded:
            return super().origin_ns(target, metric)
        served = [c.cgroup_id is not None for c in target.containers]
        if all(served):  # also a pod with no named container: its sandbox's events are eBPF's
            return self._ebpf.origin_ns(target, metric)
        return super().origin_ns(target, metric) if not any(served) else None

    def first_event_zeros(self, container: ContainerTarget, metric: str) -> bool:
        """OOM kills of the containers eBPF serves: no map entry before their first kill (origin_ns stays
        the default, the pod's creation: no later than the files' or the program's first count). Major
        faults come from memory.stat for every container: a missing value is a read problem, not a 0."""
        return (metric == OOM_KILLS and self._ebpf is not None and self.ebpf_loaded
                and self._ebpf.first_event_zeros(container, metric))

    def close(self) -> None:
        self._files.problems.close()
        if self._ebpf is not None:
            self._ebpf.close()
