"""MemoryCollector (`memory`): OOM kills and major page faults per container, from two sources under one name.

- eBPF (`ebpf/mem.c`, `MemoryBpfCollector`): OOM kills charged to the victim, major faults as they happen.
  It sees every container that has a cgroup v2 id.
- The memory cgroup files (`CgroupFiles.memory_events`, `.memory_stat`): `oom_kill` of v2 `memory.events`
  or v1 `memory.oom_control`, and `memory.stat` `pgmajfault` (v1: hierarchical `total_pgmajfault`). They
  hold the same truth (the tests check that both sources agree) and serve every container when the eBPF
  program is off or could not load, and otherwise the containers eBPF cannot see (no v2 id: a workload that
  exists only in the v1 memory hierarchy).
Both are the kernel's cumulative counters for the cgroup's lifetime, reported as-is.
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

__all__ = ["MAJOR_FAULTS", "OOM_KILLS", "USAGE", "MemoryCollector"]

USAGE = "kpod.mem.usage"


class MemoryCollector(Collector):
    name = "memory"

    def __init__(self, fs: CgroupFS, stats: ErrorCounter, *, ebpf: MemoryBpfCollector | None = None) -> None:
        """`ebpf`: the eBPF source, when eBPF may run on this node (it may still have failed to load)."""
        self._files = CgroupFiles(fs, ProblemLog(self.name, stats, log))
        self._ebpf = ebpf

    @property
    def ebpf_loaded(self) -> bool:
        return self._ebpf is not None and self._ebpf.available

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(OOM_KILLS, MAJOR_FAULTS, USAGE)

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        ebpf_loaded = self.ebpf_loaded
        snap = self._ebpf.collect(targets) if self._ebpf is not None and ebpf_loaded else CollectorSnapshot()
        for target in targets:
            for container in target.containers:
                rel, attrs = container.cgroup_path, container.attributes()
                usage = self._files.memory_usage(target.key, rel)
                if usage is not None and usage.value is not None:
                    snap.add(target.key, USAGE, usage.value, attrs)
                if ebpf_loaded and container.cgroup_id is not None:
                    continue  # the events are eBPF's
                events = self._files.memory_events(target.key, rel)
                if events is not None and events.oom_kill is not None:
                    snap.add(target.key, OOM_KILLS, events.oom_kill, attrs)
                stat = self._files.memory_stat(target.key, rel)
                if stat is not None and stat.major_faults is not None:
                    snap.add(target.key, MAJOR_FAULTS, stat.major_faults, attrs)
        self._files.problems.prune(t.key for t in targets)
        return snap

    def first_event_zeros(self, container: ContainerTarget) -> bool:
        """The containers eBPF serves have no map entry before their first event (origin_ns stays the
        default, the pod's creation: no later than the files' or the program's first count)."""
        return self._ebpf is not None and self.ebpf_loaded and self._ebpf.first_event_zeros(container)

    def close(self) -> None:
        if self._ebpf is not None:
            self._ebpf.close()
