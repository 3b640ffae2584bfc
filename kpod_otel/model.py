"""Records shared by discovery, the cgroup layer, collectors and the export pipeline.

A *target* is one thing that gets its own OTel Resource: a Kubernetes pod, or (with local discovery on a
machine without Kubernetes) a workload identified only by its cgroup path. Targets are rebuilt by
discovery and handed to collectors every cycle; they carry everything a collector needs to find the
kernel objects (cgroup paths, cgroup v2 ids, a pid for the network namespace).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

AttrValue = str | bool | int | float
Attributes = Mapping[str, AttrValue]


class ContainerKind(StrEnum):
    APP = "app"
    INIT = "init"
    EPHEMERAL = "ephemeral"


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container as the pod spec/status announces it (no kernel objects yet)."""

    name: str
    container_id: str  # runtime id without the "containerd://" scheme; "" while not started
    runtime: str = ""  # containerd | cri-o | docker | "" (unknown)
    restart_count: int = 0
    kind: ContainerKind = ContainerKind.APP


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A pod as discovery knows it."""

    uid: str
    name: str
    namespace: str
    node_name: str = ""
    qos_class: str = ""  # Guaranteed | Burstable | BestEffort | "" (unknown: searched in all classes)
    containers: tuple[ContainerInfo, ...] = ()
    host_network: bool = False
    phase: str = "Running"
    labels: Mapping[str, str] = field(default_factory=dict)
    # Static pods: the API server shows a mirror pod with its own uid, while the kubelet, the cgroup
    # tree and /var/lib/kubelet/pods use the config hash (annotation kubernetes.io/config.hash).
    kubelet_uid: str = ""
    # Set by local discovery for non-Kubernetes workloads: the cgroup path (relative to the hierarchy
    # root) that *is* the target. Kubernetes pods leave it empty and are resolved by PodCgroupMapper.
    cgroup_path: str = ""
    # metadata.creationTimestamp (ns since the epoch; 0 when unknown): the pod object exists before the
    # kubelet creates its cgroups and network namespace, so the kernel's counters of the pod all started
    # after it. Left 0 for mirror pods (created by the kubelet after the static pod started).
    created_ns: int = 0

    @property
    def key(self) -> str:
        """Identity across cycles: the pod uid, or the cgroup path of a local (non-Kubernetes) workload."""
        return self.uid if self.uid else f"cgroup:{self.cgroup_path}"

    @property
    def node_uid(self) -> str:
        """The uid under which the node (kubelet, cgroups, volumes) knows this pod."""
        return self.kubelet_uid or self.uid


@dataclass(frozen=True, slots=True)
class ContainerTarget:
    """One container of a target, resolved to its kernel objects."""

    name: str  # k8s.container.name; "" for a container whose name is unknown (local discovery)
    container_id: str
    cgroup_path: str  # relative to each hierarchy's root, e.g. "kubepods.slice/.../cri-containerd-<id>.scope"
    cgroup_id: int | None = None  # cgroup v2 id (directory inode) for eBPF attribution; None if no v2 dir
    kind: ContainerKind = ContainerKind.APP

    def attributes(self) -> dict[str, AttrValue]:
        """Attributes that every container-level point carries."""
        attrs: dict[str, AttrValue] = {"container.id": self.container_id}
        if self.name:
            attrs["k8s.container.name"] = self.name
        return attrs


@dataclass(frozen=True, slots=True)
class Target:
    """One Resource of the export: a pod (or a local workload) with its kernel objects."""

    key: str  # pod uid, or "cgroup:<path>" for local workloads
    resource: Mapping[str, AttrValue]  # identity attributes of the OTel Resource
    cgroup_path: str = ""  # the pod-level cgroup path (relative), "" if not found
    cgroup_id: int | None = None
    containers: tuple[ContainerTarget, ...] = ()
    # Pod-level cgroups that belong to no named container (the pause/sandbox container): their
    # eBPF events are charged to the pod with no container attributes.
    sandbox_cgroup_ids: tuple[int, ...] = ()
    # Containers (and the pod's own cgroups, as pod-level ids) removed since the last cycle: their files
    # are gone, but the eBPF maps still hold their final counts for exactly this one cycle.
    departed_containers: tuple[ContainerTarget, ...] = ()
    departed_cgroup_ids: tuple[int, ...] = ()
    host_network: bool = False
    pids: tuple[int, ...] = ()  # a few pids of the pod, for /proc/<pid>/ns/net and mountinfo
    volumes_dir: str = ""  # host path of the kubelet's pods/<uid>/volumes directory, if known
    namespace: str = ""  # k8s namespace, for filters and profile allow-lists
    # A time no later than the creation of any of the target's cgroups and network namespace (the pod's
    # creationTimestamp); 0 when unknown. Cumulative series read from those objects start here.
    created_ns: int = 0
