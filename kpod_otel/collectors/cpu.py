"""CpuCollector (`cpu`): run-queue latency and context switches from eBPF, CPU time, CFS throttling and the
CPU limit from the cgroup files — one configuration name, two sources.

- eBPF (`ebpf/cpu_sched.c`, `CpuSchedCollector`), when it can run on the node.
- The cgroup files (`CgroupFiles.cpu_stat`, `.cpu_quota`), always: they need no eBPF. `kpod.cpu.time` by
  `cpu.mode` is the kernel's cumulative CPU time of the container's cgroup. `kpod.cpu.limit` (quota / period)
  and the throttling counters `kpod.cpu.periods`, `kpod.cpu.throttled.periods`, `kpod.cpu.throttled.time`
  exist only for a container with a CPU limit: without a CFS quota the kernel counts no periods (they would
  be zeros forever), so they are neither read nor exported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kpod_otel.catalog import specs
from kpod_otel.cgroup.files import CgroupFiles
from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion
from kpod_otel.cgroup.problems import ErrorCounter, ProblemLog
from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentSpec
from kpod_otel.collectors.cpu_sched import CpuSchedCollector
from kpod_otel.model import Target

log = logging.getLogger(__name__)

CPU_TIME = "kpod.cpu.time"
PERIODS = "kpod.cpu.periods"
THROTTLED_PERIODS = "kpod.cpu.throttled.periods"
THROTTLED_TIME = "kpod.cpu.throttled.time"
CPU_LIMIT = "kpod.cpu.limit"
MODE_ATTR = "cpu.mode"


class CpuCollector(Collector):
    name = "cpu"

    def __init__(self, fs: CgroupFS, stats: ErrorCounter, *, ebpf: CpuSchedCollector | None = None) -> None:
        """`ebpf`: the eBPF source, when eBPF may run on this node (it may still have failed to load)."""
        self._files = CgroupFiles(fs, ProblemLog(self.name, stats, log))
        self._ebpf = ebpf
        self._ebpf_metrics = frozenset(() if ebpf is None else (s.name for s in ebpf.instruments()))
        if fs.version is CgroupVersion.V1 and fs.v1_dir("cpuacct", "") is None:
            log.warning("cpu: no v1 cpuacct hierarchy is mounted: kpod.cpu.time is not reported on this node")
            stats.error(self.name, "unsupported")

    @property
    def ebpf(self) -> CpuSchedCollector | None:
        return self._ebpf

    def instruments(self) -> Sequence[InstrumentSpec]:
        files = specs(CPU_TIME, PERIODS, THROTTLED_PERIODS, THROTTLED_TIME, CPU_LIMIT)
        return files if self._ebpf is None else (*self._ebpf.instruments(), *files)

    def origin_ns(self, target: Target, metric: str) -> int | None:
        """eBPF's metrics count from its program's load (or the pod's creation, the later); the files'
        since the cgroup's creation, after the pod's."""
        if self._ebpf is not None and metric in self._ebpf_metrics:
            return self._ebpf.origin_ns(target, metric)
        return super().origin_ns(target, metric)

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        ebpf = self._ebpf
        snap = ebpf.collect(targets) if ebpf is not None and ebpf.available else CollectorSnapshot()
        for target in targets:
            key = target.key
            for container in target.containers:
                rel, attrs = container.cgroup_path, container.attributes()
                quota = self._files.cpu_quota(key, rel)
                if quota is None:
                    continue  # gone (or no cpu cgroup): its other files would fail the same way
                cpus = quota.cpus
                limited = cpus is not None
                stat = self._files.cpu_stat(key, rel, in_v2_tree=container.cgroup_id is not None, throttling=limited)
                if stat is not None and stat.user_usec is not None and stat.system_usec is not None:
                    snap.add(key, CPU_TIME, stat.user_usec / 1e6, {**attrs, MODE_ATTR: "user"})
                    snap.add(key, CPU_TIME, stat.system_usec / 1e6, {**attrs, MODE_ATTR: "system"})
                if cpus is None:
                    continue  # no quota: no periods, no throttling, no limit
                snap.add(key, CPU_LIMIT, cpus, attrs)
                if stat is not None and stat.nr_periods is not None and stat.nr_throttled is not None:
                    snap.add(key, PERIODS, stat.nr_periods, attrs)
                    snap.add(key, THROTTLED_PERIODS, stat.nr_throttled, attrs)
                if stat is not None and stat.throttled_usec is not None:
                    snap.add(key, THROTTLED_TIME, stat.throttled_usec / 1e6, attrs)
        self._files.problems.prune(t.key for t in targets)
        return snap

    def close(self) -> None:
        self._files.problems.close()
        if self._ebpf is not None:
            self._ebpf.close()
