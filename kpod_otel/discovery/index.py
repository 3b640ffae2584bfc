"""The provider-side pod store and the agent-side per-cycle pod index.

`PodStore` is what a provider's background thread writes (LIST reconcile, watch events, kubelet polls)
and what its `pods()` reads: a thread-safe uid -> PodInfo map.

`PodIndex` is what the agent reads once per collection cycle. It pulls the provider's current view,
applies the namespace filters and keeps finished (Succeeded/Failed) and deleted pods for exactly one
more cycle, so their final cumulative values are exported before their Resource goes away.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from kpod_otel.config import FilterConfig
from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.parse import FINISHED_PHASES
from kpod_otel.model import PodInfo


class PodStore:
    """Thread-safe uid -> PodInfo view of one provider."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[str, PodInfo] = {}

    def replace(self, pods: Iterable[PodInfo]) -> tuple[int, int]:
        """Reconcile with a full listing; returns (added, removed) counts."""
        fresh = {p.uid: p for p in pods}
        with self._lock:
            added = len(fresh.keys() - self._pods.keys())
            removed = len(self._pods.keys() - fresh.keys())
            self._pods = fresh
        return added, removed

    def upsert(self, pod: PodInfo) -> None:
        with self._lock:
            self._pods[pod.uid] = pod

    def remove(self, uid: str) -> None:
        with self._lock:
            self._pods.pop(uid, None)

    def snapshot(self) -> list[PodInfo]:
        with self._lock:
            return list(self._pods.values())

    def get(self, uid: str) -> PodInfo | None:
        with self._lock:
            return self._pods.get(uid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods)


class PodIndex:
    """The node's pods as the agent sees them, one consistent view per cycle.

    Call `cycle()` once per collection cycle (from one thread). A pod that finished or disappeared is
    returned by exactly one more `cycle()` (with its last known state) and then no more; a finished pod
    that the API still lists is not returned again unless it leaves the finished phases.
    """

    def __init__(self, provider: PodProvider, filters: FilterConfig) -> None:
        self._provider = provider
        self._filters = filters
        self._last: dict[str, PodInfo] = {}  # what the previous cycle saw from the provider (filtered)
        self._retired: set[str] = set()  # finished pods whose final cycle has happened
        self._current: dict[str, PodInfo] = {}  # what the last cycle returned

    def cycle(self) -> list[PodInfo]:
        # Local non-Kubernetes workloads (cgroup_path set) have no namespace for the filters to judge.
        seen = {p.key: p for p in self._provider.pods() if p.cgroup_path or self._filters.allows(p.namespace)}
        out: dict[str, PodInfo] = {}
        for key, pod in seen.items():
            if pod.phase in FINISHED_PHASES:
                if key in self._retired:
                    continue
                self._retired.add(key)  # this is its final cycle
            else:
                self._retired.discard(key)
            out[key] = pod
        for key, pod in self._last.items():
            if key not in seen and key not in self._retired:
                out[key] = pod  # deleted since the last cycle: one final cycle with its last state
        self._retired &= seen.keys()
        self._last = seen
        self._current = out
        return list(out.values())

    def get(self, key: str) -> PodInfo | None:
        """The pod (by `PodInfo.key`: its uid, or "cgroup:<path>") as returned by the last cycle."""
        return self._current.get(key)
