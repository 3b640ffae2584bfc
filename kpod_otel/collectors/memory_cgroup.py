"""MemoryCgroupCollector: OOM kills and major page faults per container from the memory cgroup files.

The fallback for the eBPF memory collector when eBPF is disabled or unavailable (DESIGN §4: the cgroup
files hold the same truth). Sources, per container, each read once per cycle:
- `kpod.mem.oom.kills`: v2 `memory.events` `oom_kill` (hierarchical); v1 `memory.oom_control` `oom_kill`.
- `kpod.mem.major.page.faults`: `memory.stat` `pgmajfault` (v2) / `total_pgmajfault` (v1, hierarchical,
  falling back to `pgmajfault`).
Both are the kernel's cumulative counters for the cgroup's lifetime, reported as-is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion
from kpod_otel.cgroup.parsers import parse_memory_events, parse_memory_oom_control, parse_memory_stat
from kpod_otel.cgroup.problems import ProblemLog
from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentKind, InstrumentSpec
from kpod_otel.model import Target
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

OOM_KILLS = "kpod.mem.oom.kills"
MAJOR_FAULTS = "kpod.mem.major.page.faults"

MEMORY_INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    InstrumentSpec(OOM_KILLS, InstrumentKind.COUNTER, "{kill}",
                   "Processes of the container killed by the OOM killer"),
    InstrumentSpec(MAJOR_FAULTS, InstrumentKind.COUNTER, "{fault}", "Major page faults in the container"),
)


class MemoryCgroupCollector(Collector):
    name = "memory_cgroup"

    def __init__(self, fs: CgroupFS, stats: AgentStats, *, only_without_cgroup_id: bool = False) -> None:
        """`only_without_cgroup_id`: the eBPF memory program runs, and it serves every container that has
        a cgroup v2 id; these files then serve only the containers it cannot see (a workload that exists
        in the v1 memory hierarchy alone)."""
        self._fs = fs
        self._only_without_cgroup_id = only_without_cgroup_id
        self._problems = ProblemLog(self.name, stats, log)
        self._events_file = "memory.events" if fs.version is CgroupVersion.V2 else "memory.oom_control"

    def instruments(self) -> Sequence[InstrumentSpec]:
        return MEMORY_INSTRUMENTS

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        snap = CollectorSnapshot()
        for target in targets:
            for container in target.containers:
                if self._only_without_cgroup_id and container.cgroup_id is not None:
                    continue
                directory = self._fs.controller_dir("memory", container.cgroup_path)
                if directory is None:
                    continue
                attrs = container.attributes()
                oom_kills = self._oom_kills(target.key, container.cgroup_path, directory)
                if oom_kills is not None:
                    snap.add(target.key, OOM_KILLS, oom_kills, attrs)
                faults = self._major_faults(target.key, container.cgroup_path, directory)
                if faults is not None:
                    snap.add(target.key, MAJOR_FAULTS, faults, attrs)
        self._problems.prune(t.key for t in targets)
        return snap

    def _oom_kills(self, key: str, rel: str, directory: str) -> int | None:
        text = self._read(key, rel, os.path.join(directory, self._events_file))
        if text is None:
            return None
        if self._fs.version is CgroupVersion.V2:
            events = parse_memory_events(text)
            bad, value = events.malformed, events.oom_kill
        else:
            control = parse_memory_oom_control(text)
            bad, value = control.malformed, control.oom_kill
        if bad:
            self._problems.report(key, "parse", f"{bad} malformed lines in {self._events_file}", bad)
        return value

    def _major_faults(self, key: str, rel: str, directory: str) -> int | None:
        text = self._read(key, rel, os.path.join(directory, "memory.stat"))
        if text is None:
            return None
        stat = parse_memory_stat(text)
        if stat.malformed:
            self._problems.report(key, "parse", f"{stat.malformed} malformed lines in memory.stat",
                                  stat.malformed)
        return stat.major_faults

    def _read(self, key: str, rel: str, path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read()
        except OSError as exc:
            self._problems.os_error(key, path, exc, lambda: self._fs.exists(rel))
            return None
