"""Kubernetes cgroup naming: pod UID -> pod cgroup, container id -> container cgroup, and back.

kubelet names pod cgroups after its cgroup driver:
- systemd:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid, '-' as '_'>.slice
            (Guaranteed pods sit directly under kubepods.slice: kubepods-pod<uid_>.slice)
- cgroupfs: kubepods/<qos>/pod<uid> (Guaranteed: kubepods/pod<uid>)
kind/minikube nodes run kubelet with `--cgroup-root=/kubelet`, which gives
`kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-<qos>.slice/kubelet-kubepods-<qos>-pod<uid_>.slice`
(systemd) or `kubelet/kubepods/<qos>/pod<uid>` (cgroupfs).

Container runtimes name container cgroups inside the pod cgroup: `cri-containerd-<id>.scope`
(containerd, systemd driver), `crio-<id>.scope` (CRI-O; `crio-conmon-<id>.scope` is CRI-O's monitor
process, not a container), `docker-<id>.scope` (dockershim/cri-dockerd), or the bare `<id>` (cgroupfs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

QOS_CLASSES = ("guaranteed", "burstable", "besteffort")


class CgroupDriver(StrEnum):
    SYSTEMD = "systemd"
    CGROUPFS = "cgroupfs"


@dataclass(frozen=True, slots=True)
class KubepodsRoot:
    """Where a kubelet puts its pods: the kubepods cgroup and the naming scheme below it."""

    path: str  # relative cgroup path of the kubepods cgroup
    driver: CgroupDriver
    slice_prefix: str = ""  # systemd: the unit-name prefix of the children ("kubepods", "kubelet-kubepods")

    def qos_path(self, qos: str) -> str:
        """The cgroup that holds the pods of a QoS class (the kubepods cgroup itself for guaranteed)."""
        if qos == "guaranteed":
            return self.path
        if self.driver is CgroupDriver.SYSTEMD:
            return f"{self.path}/{self.slice_prefix}-{qos}.slice"
        return f"{self.path}/{qos}"

    def pod_dir_name(self, uid: str, qos: str) -> str:
        if self.driver is CgroupDriver.SYSTEMD:
            escaped = uid.replace("-", "_")
            if qos == "guaranteed":
                return f"{self.slice_prefix}-pod{escaped}.slice"
            return f"{self.slice_prefix}-{qos}-pod{escaped}.slice"
        return f"pod{uid}"

    def pod_path(self, uid: str, qos: str) -> str:
        return f"{self.qos_path(qos)}/{self.pod_dir_name(uid, qos)}"


KNOWN_ROOTS: tuple[KubepodsRoot, ...] = (
    KubepodsRoot("kubepods.slice", CgroupDriver.SYSTEMD, "kubepods"),
    KubepodsRoot("kubepods", CgroupDriver.CGROUPFS),
    KubepodsRoot("kubelet.slice/kubelet-kubepods.slice", CgroupDriver.SYSTEMD, "kubelet-kubepods"),
    KubepodsRoot("kubelet/kubepods", CgroupDriver.CGROUPFS),
)


def normalize_qos(qos_class: str) -> str | None:
    """"Burstable" (pod status) -> "burstable"; None when unknown."""
    q = qos_class.strip().lower()
    return q if q in QOS_CLASSES else None


def pod_path_candidates(root: KubepodsRoot, uid: str, qos_class: str = "") -> list[str]:
    """Candidate cgroup paths of a pod under one kubepods root, the announced QoS class first."""
    known = normalize_qos(qos_class)
    order = [known] if known else []
    order += [q for q in ("burstable", "besteffort", "guaranteed") if q != known]
    return [root.pod_path(uid, q) for q in order]


_UID_CHARS = r"[0-9a-fA-F_-]{8,}"
_POD_SYSTEMD = re.compile(
    rf"^(?P<prefix>[a-z-]*kubepods)(?:-(?P<qos>burstable|besteffort))?-pod(?P<uid>{_UID_CHARS})\.slice$"
)
_POD_CGROUPFS = re.compile(rf"^pod(?P<uid>{_UID_CHARS})$")


@dataclass(frozen=True, slots=True)
class PodDir:
    uid: str
    qos: str  # guaranteed | burstable | besteffort


def parse_pod_dir_name(name: str, parent_qos: str = "") -> PodDir | None:
    """The pod a cgroup directory name stands for, or None.

    cgroupfs names carry no QoS class: the caller passes the QoS of the directory it found them in.
    """
    m = _POD_SYSTEMD.match(name)
    if m:
        return PodDir(m.group("uid").replace("_", "-"), m.group("qos") or "guaranteed")
    m = _POD_CGROUPFS.match(name)
    if m:
        return PodDir(m.group("uid"), parent_qos or "guaranteed")
    return None


class Runtime(StrEnum):
    CONTAINERD = "containerd"
    CRIO = "cri-o"
    DOCKER = "docker"
    UNKNOWN = ""


_SCOPE_PREFIX = {Runtime.CONTAINERD: "cri-containerd-", Runtime.CRIO: "crio-", Runtime.DOCKER: "docker-"}
_CONTAINER_ID = r"[0-9a-f]{64}"
_SCOPE = re.compile(rf"^(?P<prefix>cri-containerd-|crio-|docker-)(?P<id>{_CONTAINER_ID})\.scope$")
_BARE = re.compile(rf"^(?P<prefix>cri-containerd-|crio-|docker-)?(?P<id>{_CONTAINER_ID})$")
_PREFIX_RUNTIME = {v: k for k, v in _SCOPE_PREFIX.items()}


def normalize_runtime(runtime: str) -> Runtime:
    r = runtime.strip().lower()
    if r in ("containerd", "cri-containerd"):
        return Runtime.CONTAINERD
    if r in ("cri-o", "crio"):
        return Runtime.CRIO
    if r == "docker":
        return Runtime.DOCKER
    return Runtime.UNKNOWN


def container_dir_candidates(container_id: str, runtime: str = "") -> list[str]:
    """Directory names a container's cgroup can have inside its pod's cgroup, most likely first."""
    known = normalize_runtime(runtime)
    order = [known] if known is not Runtime.UNKNOWN else []
    order += [r for r in (Runtime.CONTAINERD, Runtime.CRIO, Runtime.DOCKER) if r not in order]
    names = [f"{_SCOPE_PREFIX[r]}{container_id}.scope" for r in order]
    names.append(container_id)  # cgroupfs driver: containerd and docker use the bare id
    names += [f"{_SCOPE_PREFIX[r]}{container_id}" for r in order]  # cgroupfs driver with prefixes (cri-o)
    return names


@dataclass(frozen=True, slots=True)
class ContainerDir:
    container_id: str
    runtime: Runtime


def parse_container_dir_name(name: str) -> ContainerDir | None:
    """The container a cgroup directory inside a pod cgroup stands for, or None (also for
    `crio-conmon-<id>.scope`, CRI-O's per-container monitor, which is no container)."""
    m = _SCOPE.match(name) or _BARE.match(name)
    if not m:
        return None
    prefix = m.group("prefix") or ""
    return ContainerDir(m.group("id"), _PREFIX_RUNTIME.get(prefix, Runtime.UNKNOWN))
