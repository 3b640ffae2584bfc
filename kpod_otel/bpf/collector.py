"""Common part of the eBPF collectors: one program each, read once per cycle, attributed by cgroup id."""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Sequence

from kpod_otel.bpf.attribution import Owner, owners_by_cgroup
from kpod_otel.bpf.cgroupv2 import CgroupWalkError, live_cgroup_ids
from kpod_otel.bpf.maps import delete_keys
from kpod_otel.bpf.program import REMOVED_MAP, BpfEnvironment, BpfProgram, ProgramSpec
from kpod_otel.collector import Collector, CollectorSnapshot
from kpod_otel.model import ContainerTarget, Target
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

UNATTRIBUTED = "kpod.agent.bpf.containers.unattributed"
SWEEP_EVERY_CYCLES = 40  # ~10 min at 15 s: removed cgroups the rmdir tracepoint missed (agent restarts)
SWEEP_FILL_RATIO = 0.8  # sweep at once when a per-cgroup map is this full


class BpfCollector(Collector):
    """Loads its program at construction; `available` tells whether it runs (else `unavailable_reason`)."""

    def __init__(self, stats: AgentStats, env: BpfEnvironment) -> None:
        self._stats = stats
        self._env = env
        self._program = BpfProgram(self.program_spec(self._env), self._env, stats)
        # Taken before loading: nothing the program counts can be older.
        self._loaded_ns = time.time_ns()
        self._program.load()
        self._cycles = 0

    @abstractmethod
    def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
        """The program this collector runs, as configured."""

    @abstractmethod
    def _read(self, owners: dict[int, Owner], snap: CollectorSnapshot) -> dict[str, set[int]]:
        """Read every map once into `snap`; return the cgroup ids found per per-cgroup map."""

    @property
    def available(self) -> bool:
        return self._program.loaded

    @property
    def unavailable_reason(self) -> str:
        return self._program.reason

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        snap = CollectorSnapshot()
        if not self._program.loaded:
            return snap
        self._report_unattributed(targets)
        try:
            # Removed cgroups noted before this read have their final values in it; delete them after.
            removed = self._removed_cgroups()
            keys = self._read(owners_by_cgroup(targets), snap)
        except Exception as exc:  # a map read failing must not take the agent down
            log.warning("%s: reading BPF maps failed: %s", self.name, exc)
            self._stats.error(self.name, "read")
            return CollectorSnapshot(failed=True)
        self._program.report({name: len(ids) for name, ids in keys.items()})
        self._cycles += 1
        if removed:
            self._forget(removed)
        self._maybe_sweep(keys)
        return snap

    def origin_ns(self, target: Target, metric: str) -> int | None:
        """The later of the program's load and the pod's creation: map entries count from then on."""
        return max(self._loaded_ns, target.created_ns)

    def first_event_zeros(self, container: ContainerTarget, metric: str) -> bool:
        """A map gets a container's entry at its first event: until then, its counters are 0 (every metric
        of a BPF collector comes from its maps)."""
        return self._program.loaded and container.cgroup_id is not None

    def _report_unattributed(self, targets: Sequence[Target]) -> None:
        """Containers without a cgroup v2 directory (a hybrid node whose runtime creates none) have no id
        the programs could charge their events to: say so once and count them."""
        missing = [c for t in targets for c in t.containers if c.cgroup_id is None]
        self._stats.set(UNATTRIBUTED, len(missing))
        if missing:
            self._env.say_once(UNATTRIBUTED, "%d containers (e.g. %s) have no cgroup v2 directory under %s: they "
                               "get no eBPF metrics (%s)", len(missing), missing[0].cgroup_path,
                               self._env.cgroup2_root, UNATTRIBUTED)

    def _removed_cgroups(self) -> set[int]:
        table = self._program.table(REMOVED_MAP)
        return {int(k.value) for k in table}

    def _forget(self, removed: set[int]) -> None:
        """Delete the entries of cgroups removed before this cycle's read (which exported them once more)."""
        for name in self._program.spec.cgroup_maps:
            delete_keys(self._program.table(name), removed)
        delete_keys(self._program.table(REMOVED_MAP), removed)

    def _maybe_sweep(self, keys: dict[str, set[int]]) -> None:
        fullest = max((len(ids) for ids in keys.values()), default=0)
        if self._cycles % SWEEP_EVERY_CYCLES and fullest < SWEEP_FILL_RATIO * self._env.max_cgroups:
            return
        self.sweep(keys)

    def sweep(self, keys: dict[str, set[int]]) -> int:
        """Delete entries of cgroups that no longer exist; returns how many were deleted.

        `keys` were read from the maps before this walk of the v2 tree, so each of them belonged to a
        cgroup that existed before the walk; cgroup ids are never reused, so one missing from the walk is
        gone for good (a cgroup created meanwhile has no key in `keys`).
        """
        root = self._env.cgroup2_root
        if root is None:
            return 0
        try:
            live = live_cgroup_ids(root)
        except CgroupWalkError as exc:
            # A subtree that could not be read may hold live cgroups: deleting what the walk missed
            # would zero their counters. The next sweep tries again.
            log.warning("%s: sweep of removed cgroups stopped: %s", self.name, exc)
            self._stats.error(self.name, "sweep")
            return 0
        deleted = 0
        for name, ids in keys.items():
            stale = ids - live
            if stale:
                deleted += delete_keys(self._program.table(name), stale)
        if deleted:
            log.info("%s: removed %d BPF map entries of deleted cgroups", self.name, deleted)
        return deleted

    def close(self) -> None:
        self._program.close()
