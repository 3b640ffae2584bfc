"""PodCgroupMapper: pods as discovery announces them -> Targets with their kernel objects.

Called once per cycle with the current pods. What does not change while a pod lives (its cgroup path,
the v2 ids of its cgroups, which child cgroups are containers and which the sandbox) is cached per pod
and only re-derived when the pod's container ids change or a cached cgroup disappears, so a cycle at
110 pods costs one `stat` and one small `cgroup.procs` read per pod, never a walk of the cgroup tree.

Resource attributes:
- Kubernetes pods: `k8s.pod.uid`, `k8s.pod.name`, `k8s.namespace.name`, `k8s.node.name`, plus
  `k8s.cluster.name` when configured (name and namespace are omitted when unknown, as with pods found
  by local discovery, which only knows the UID from the cgroup path).
- Local workloads (a PodInfo with no uid and a `cgroup_path`, from LocalCgroupProvider on a machine
  without Kubernetes): `kpod.workload.cgroup` (the relative cgroup path, which is the identity),
  `kpod.workload.name` (the unit name or the container id), `kpod.workload.kind` (systemd-service,
  docker-container, …; taken from the PodInfo label of the same key), and `host.name` (the node name)
  when known. The workload's cgroup is its single container; its `container.id` is the Docker id or
  the unit name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.paths import (
    KNOWN_ROOTS,
    KubepodsRoot,
    container_dir_candidates,
    parse_container_dir_name,
    pod_path_candidates,
)
from kpod_otel.model import AttrValue, ContainerTarget, PodInfo, Target
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

WORKLOAD_KIND_LABEL = "kpod.workload.kind"
_COMPONENT = "cgroup_mapper"


class PodPathResolver:
    """Finds pod and container cgroups. Knows which kubepods roots exist on this node, re-probing them
    only while none is found (kubelet may start after the agent)."""

    def __init__(self, fs: CgroupFS, roots: Sequence[KubepodsRoot] = KNOWN_ROOTS) -> None:
        self._fs = fs
        self._all_roots = tuple(roots)
        self._present: tuple[KubepodsRoot, ...] = ()

    def present_roots(self) -> tuple[KubepodsRoot, ...]:
        if not self._present:
            self._present = tuple(r for r in self._all_roots if self._fs.exists(r.path))
        return self._present

    def forget_roots(self) -> None:
        self._present = ()

    def pod_path(self, uid: str, qos_class: str = "") -> str | None:
        for root in self.present_roots():
            for candidate in pod_path_candidates(root, uid, qos_class):
                if self._fs.exists(candidate):
                    return candidate
        return None

    def container_path(self, pod_path: str, container_id: str, runtime: str = "") -> str | None:
        for name in container_dir_candidates(container_id, runtime):
            candidate = f"{pod_path}/{name}"
            if self._fs.exists(candidate):
                return candidate
        return None


@dataclass(slots=True)
class _PodState:
    """What is known about one pod's cgroups; rebuilt when `container_ids` no longer match."""

    cgroup_path: str
    cgroup_id: int | None
    container_ids: frozenset[str]
    containers: dict[str, ContainerTarget] = field(default_factory=dict)  # container id -> target
    sandbox_paths: tuple[str, ...] = ()
    sandbox_ids: tuple[int, ...] = ()
    complete: bool = False  # every announced container was found
    # Cycles until an incomplete state is re-derived: a completed init container keeps its id in the
    # pod status but its cgroup is gone for good, so retrying every cycle would be wasted work.
    retry_in: int = 0
    # Containers no longer announced (a restarted container's previous instance) whose cgroups still
    # exist: still reported as themselves, not folded into the pod.
    retired: dict[str, ContainerTarget] = field(default_factory=dict)
    # Cgroups removed since the last cycle, reported once more so the final eBPF counts (which the
    # kernel keeps for one more read) reach the export; cleared after one cycle.
    departed: tuple[ContainerTarget, ...] = ()
    departed_ids: tuple[int, ...] = ()


class PodCgroupMapper:
    def __init__(
        self,
        fs: CgroupFS,
        stats: AgentStats,
        *,
        kubelet_root: str = "/var/lib/kubelet",
        node_name: str = "",
        cluster_name: str = "",
        max_pids: int = 2,
        incomplete_retry_cycles: int = 4,
        resolver: PodPathResolver | None = None,
    ) -> None:
        self._fs = fs
        self._stats = stats
        self._kubelet_root = kubelet_root
        self._node_name = node_name
        self._cluster_name = cluster_name
        self._max_pids = max_pids
        self._incomplete_retry_cycles = incomplete_retry_cycles
        self._resolver = resolver or PodPathResolver(fs)
        self._state: dict[str, _PodState] = {}
        self._not_found_logged: set[str] = set()

    # --- public -------------------------------------------------------------------------------------

    def map(self, pods: Iterable[PodInfo]) -> list[Target]:
        """One Target per pod; a pod whose cgroup is not (yet) found still gets a Target (its Resource
        is known) with no cgroup path, so collectors that need none can still report it."""
        targets: list[Target] = []
        seen: set[str] = set()
        for pod in pods:
            key = pod.key
            seen.add(key)
            try:
                targets.append(self._map_one(key, pod))
            except OSError as exc:  # a cgroup vanished between two checks: retry next cycle
                self._state.pop(key, None)
                self._stats.error(_COMPONENT, "vanished")
                log.debug("pod %s: cgroup vanished while mapping (%s)", key, exc)
                targets.append(Target(key=key, resource=self.resource(pod), host_network=pod.host_network,
                                      namespace=pod.namespace, created_ns=pod.created_ns,
                                      volumes_dir=self._volumes_dir(pod)))
        for gone in set(self._state) - seen:
            del self._state[gone]
        self._not_found_logged &= seen
        return targets

    def resource(self, pod: PodInfo) -> dict[str, AttrValue]:
        attrs: dict[str, AttrValue] = {}
        if pod.uid:
            attrs["k8s.pod.uid"] = pod.uid
            if pod.name:
                attrs["k8s.pod.name"] = pod.name
            if pod.namespace:
                attrs["k8s.namespace.name"] = pod.namespace
            node = pod.node_name or self._node_name
            if node:
                attrs["k8s.node.name"] = node
            if self._cluster_name:
                attrs["k8s.cluster.name"] = self._cluster_name
            return attrs
        attrs["kpod.workload.cgroup"] = pod.cgroup_path
        if pod.name:
            attrs["kpod.workload.name"] = pod.name
        kind = pod.labels.get(WORKLOAD_KIND_LABEL, "")
        if kind:
            attrs["kpod.workload.kind"] = kind
        if self._node_name:
            attrs["host.name"] = self._node_name
        return attrs

    # --- internals ----------------------------------------------------------------------------------

    def _map_one(self, key: str, pod: PodInfo) -> Target:
        state = self._state.get(key)
        container_ids = frozenset(c.container_id for c in pod.containers if c.container_id)
        if state is not None and not self._fs.exists(state.cgroup_path):
            # The pod's cgroup went away: one last Target with its old cgroup ids, so the final eBPF
            # counts (the kernel keeps them for one more read) are exported; rebuilt next cycle.
            del self._state[key]
            return Target(key=key, resource=self.resource(pod), host_network=pod.host_network,
                          namespace=pod.namespace, created_ns=pod.created_ns, volumes_dir=self._volumes_dir(pod),
                          departed_containers=(*state.containers.values(), *state.retired.values(),
                                               *state.departed),
                          departed_cgroup_ids=tuple(i for i in (state.cgroup_id, *state.sandbox_ids,
                                                                *state.departed_ids) if i is not None))
        if state is not None and not state.complete and state.container_ids == container_ids:
            state.retry_in -= 1
        stale = state is None or state.container_ids != container_ids or (
            not state.complete and state.retry_in <= 0)
        if state is not None and not stale:
            self._retire_removed(state)
        if state is None or stale:
            state = self._build_state(key, pod, container_ids, previous=state)
            if state is None:
                self._state.pop(key, None)
                return Target(key=key, resource=self.resource(pod), host_network=pod.host_network,
                              namespace=pod.namespace, created_ns=pod.created_ns,
                              volumes_dir=self._volumes_dir(pod))
            self._state[key] = state
        target = Target(
            key=key,
            resource=self.resource(pod),
            cgroup_path=state.cgroup_path,
            cgroup_id=state.cgroup_id,
            containers=(*state.containers.values(), *state.retired.values()),
            sandbox_cgroup_ids=state.sandbox_ids,
            departed_containers=state.departed,
            departed_cgroup_ids=state.departed_ids,
            host_network=pod.host_network,
            pids=self._pids(state),
            volumes_dir=self._volumes_dir(pod),
            namespace=pod.namespace, created_ns=pod.created_ns,
        )
        state.departed, state.departed_ids = (), ()
        return target

    def _volumes_dir(self, pod: PodInfo) -> str:
        if not pod.uid:
            return ""
        return os.path.join(os.path.normpath(self._kubelet_root), "pods", pod.node_uid, "volumes")

    def _find_pod_path(self, key: str, pod: PodInfo) -> str | None:
        if pod.cgroup_path:
            path = pod.cgroup_path.strip("/")
            return path if self._fs.exists(path) else None
        found = self._resolver.pod_path(pod.node_uid, pod.qos_class)
        if found is None and not self._resolver.present_roots():
            self._resolver.forget_roots()
        return found

    def _build_state(self, key: str, pod: PodInfo, container_ids: frozenset[str],
                     previous: _PodState | None) -> _PodState | None:
        pod_path = previous.cgroup_path if previous is not None else self._find_pod_path(key, pod)
        if pod_path is None:
            if key not in self._not_found_logged:
                self._not_found_logged.add(key)
                log.info("pod %s (%s/%s): no cgroup found yet", key, pod.namespace, pod.name)
            return None
        state = _PodState(cgroup_path=pod_path, cgroup_id=self._fs.cgroup_id(pod_path),
                          container_ids=container_ids)
        if not pod.uid:  # a local workload: its own cgroup is its one container
            cid = pod.containers[0].container_id if pod.containers else (pod.name or pod_path)
            state.containers[cid] = ContainerTarget(name="", container_id=cid, cgroup_path=pod_path,
                                                    cgroup_id=state.cgroup_id)
            state.complete = True
            return state
        old = previous.containers if previous is not None else {}
        found = 0
        for info in pod.containers:
            if not info.container_id:
                continue
            known = old.get(info.container_id)
            path = known.cgroup_path if known is not None else self._resolver.container_path(
                pod_path, info.container_id, info.runtime)
            if path is None:
                continue
            found += 1
            state.containers[info.container_id] = ContainerTarget(
                name=info.name,
                container_id=info.container_id,
                cgroup_path=path,
                cgroup_id=known.cgroup_id if known is not None else self._fs.cgroup_id(path),
                kind=info.kind,
            )
        state.complete = found == len(container_ids)
        state.retry_in = 0 if state.complete else self._incomplete_retry_cycles
        if previous is not None:
            for cid, c in {**previous.retired, **previous.containers}.items():
                if cid not in state.containers:
                    state.retired[cid] = c
            self._retire_removed(state, departed=previous.departed, departed_ids=previous.departed_ids)
        # Child cgroups that are containers but none of the announced (or retired) ones: the sandbox.
        claimed = {os.path.basename(c.cgroup_path) for c in (*state.containers.values(), *state.retired.values())}
        sandbox: list[str] = []
        for name in sorted(self._fs.children(pod_path)):
            parsed = parse_container_dir_name(name)
            if parsed is not None and name not in claimed:
                sandbox.append(f"{pod_path}/{name}")
        state.sandbox_paths = tuple(sandbox)
        state.sandbox_ids = tuple(i for i in (self._fs.cgroup_id(p) for p in sandbox) if i is not None)
        if previous is not None:
            state.departed_ids += tuple(i for i in previous.sandbox_ids if i not in state.sandbox_ids)
        return state

    def _retire_removed(self, state: _PodState, departed: tuple[ContainerTarget, ...] = (),
                        departed_ids: tuple[int, ...] = ()) -> None:
        """Retired containers whose cgroup is gone now depart (one more cycle for their eBPF counts)."""
        gone = [cid for cid, c in state.retired.items() if not self._fs.exists(c.cgroup_path)]
        state.departed = (*departed, *(state.retired.pop(cid) for cid in gone))
        state.departed_ids = departed_ids

    def _pids(self, state: _PodState) -> tuple[int, ...]:
        """A few live pids of the pod, the sandbox's first (it holds the pod's network namespace)."""
        pids: list[int] = []
        paths = [*state.sandbox_paths, *(c.cgroup_path for c in state.containers.values())]
        for path in paths:
            if len(pids) >= self._max_pids:
                break
            try:
                pids.extend(self._fs.pids(path, self._max_pids - len(pids)))
            except OSError:
                continue  # that container just exited; others may still have pids
        return tuple(pids)

