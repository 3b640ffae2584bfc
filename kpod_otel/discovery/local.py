"""LocalCgroupProvider: discovery from the host's cgroup filesystem alone (`discovery.mode: local`, and
the last fallback of `auto`).

Kubernetes pods are found by listing the kubepods cgroups (the kubepods root, its QoS children, their
pod children, and the pods' container children: a bounded walk of four levels, never the whole tree).
Their identity is what the paths carry: the pod UID, the QoS class and the container ids; names and
namespaces are unknown (empty). The sandbox (pause) container cannot be told from the others by its
cgroup name; it is recognised by its single process being `pause` (`/proc/<pid>/comm`), and left out
of the containers so the mapper charges it to the pod.

On a machine without Kubernetes (no kubepods cgroup), the other workloads are announced instead, each
identified by its cgroup path (`PodInfo.uid` empty, `cgroup_path` set, label `kpod.workload.kind`):
- systemd services: `system.slice/<name>.service` (kind `systemd-service`, name = the unit name);
- Docker containers: `system.slice/docker-<id>.scope` (systemd driver) or `docker/<id>` (cgroupfs
  driver) (kind `docker-container`, name and container id = the Docker id);
- when there is neither (no systemd, no Docker), every top-level cgroup (kind `cgroup`).

`pods()` rescans at most every `rescan_interval` seconds; a rescan costs a few directory listings.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import WORKLOAD_KIND_LABEL
from kpod_otel.cgroup.paths import (
    KNOWN_ROOTS,
    CgroupDriver,
    KubepodsRoot,
    parse_container_dir_name,
    parse_pod_dir_name,
)
from kpod_otel.discovery.base import PodProvider
from kpod_otel.model import ContainerInfo, PodInfo

log = logging.getLogger(__name__)

_DOCKER_SCOPE = re.compile(r"^docker-(?P<id>[0-9a-f]{64})\.scope$")
_DOCKER_BARE = re.compile(r"^[0-9a-f]{64}$")
_QOS_SYSTEMD = re.compile(r"^[a-z-]*kubepods-(?P<qos>burstable|besteffort)\.slice$")


class LocalCgroupProvider(PodProvider):
    mode = "local"

    def __init__(
        self,
        fs: CgroupFS,
        *,
        proc_root: str = "/proc",
        node_name: str = "",
        include_services: bool = True,
        rescan_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fs = fs
        self._proc_root = proc_root
        self._node_name = node_name
        self._include_services = include_services
        self._rescan_interval = rescan_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pods: list[PodInfo] = []
        self._scanned_at: float | None = None
        self._healthy = True
        self._sandbox_cache: dict[str, bool] = {}  # container cgroup path -> is the pause sandbox

    def start(self) -> None:
        self.pods()

    def stop(self) -> None:
        pass

    def healthy(self) -> bool:
        return self._healthy

    def pods(self) -> list[PodInfo]:
        with self._lock:
            now = self._clock()
            if self._scanned_at is None or now - self._scanned_at >= self._rescan_interval:
                self._scanned_at = now
                try:
                    self._pods = self.scan()
                    self._healthy = True
                except OSError as exc:
                    self._healthy = False
                    log.warning("local discovery: cannot scan the cgroup tree: %s", exc)
            return list(self._pods)

    # --- scanning -----------------------------------------------------------------------------------

    def scan(self) -> list[PodInfo]:
        roots = [r for r in KNOWN_ROOTS if self._fs.exists(r.path)]
        pods: list[PodInfo] = []
        for root in roots:
            pods.extend(self._scan_kubepods(root))
        if not roots and self._include_services:
            workloads = self._scan_workloads()
            pods.extend(workloads or self._scan_top_level())
        seen: set[str] = set()
        live_paths = set()
        unique: list[PodInfo] = []
        for pod in pods:
            key = pod.uid or pod.cgroup_path
            if key not in seen:
                seen.add(key)
                unique.append(pod)
                live_paths.add(pod.cgroup_path)
        self._sandbox_cache = {p: v for p, v in self._sandbox_cache.items()
                               if os.path.dirname(p) in live_paths}
        return unique

    def _children(self, rel: str) -> list[str]:
        try:
            return sorted(self._fs.children(rel))
        except OSError:
            return []  # vanished between listing and descending

    def _scan_kubepods(self, root: KubepodsRoot) -> list[PodInfo]:
        found: list[PodInfo] = []
        for name in self._children(root.path):
            qos = ""
            if root.driver is CgroupDriver.SYSTEMD:
                m = _QOS_SYSTEMD.match(name)
                if m:
                    qos = m.group("qos")
            elif name in ("burstable", "besteffort"):
                qos = name
            if qos:
                for pod_name in self._children(f"{root.path}/{name}"):
                    pod = self._pod(f"{root.path}/{name}", pod_name, qos)
                    if pod is not None:
                        found.append(pod)
            else:
                pod = self._pod(root.path, name, "guaranteed")
                if pod is not None:
                    found.append(pod)
        return found

    def _pod(self, parent: str, name: str, qos: str) -> PodInfo | None:
        parsed = parse_pod_dir_name(name, qos)
        if parsed is None:
            return None
        path = f"{parent}/{name}"
        containers: list[ContainerInfo] = []
        for child in self._children(path):
            cdir = parse_container_dir_name(child)
            if cdir is None or self._is_sandbox(f"{path}/{child}"):
                continue
            containers.append(ContainerInfo(name="", container_id=cdir.container_id,
                                            runtime=cdir.runtime.value))
        return PodInfo(
            uid=parsed.uid, name="", namespace="", node_name=self._node_name,
            qos_class=parsed.qos.capitalize() if parsed.qos != "besteffort" else "BestEffort",
            containers=tuple(containers), cgroup_path=path,
        )

    def _is_sandbox(self, rel: str) -> bool:
        cached = self._sandbox_cache.get(rel)
        if cached is not None:
            return cached
        try:
            pids = self._fs.pids(rel, 2)
        except OSError:
            return False
        if not pids:
            return False  # an empty cgroup: decide later, when it has a process
        result = len(pids) == 1 and self._comm(pids[0]) == "pause"
        self._sandbox_cache[rel] = result
        return result

    def _comm(self, pid: int) -> str:
        try:
            with open(os.path.join(self._proc_root, str(pid), "comm")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def _scan_workloads(self) -> list[PodInfo]:
        found: list[PodInfo] = []
        for name in self._children("system.slice"):
            path = f"system.slice/{name}"
            m = _DOCKER_SCOPE.match(name)
            if m:
                found.append(self._workload(path, m.group("id"), "docker-container", m.group("id")))
            elif name.endswith(".service"):
                found.append(self._workload(path, name, "systemd-service", name))
        for name in self._children("docker"):
            if _DOCKER_BARE.match(name):
                found.append(self._workload(f"docker/{name}", name, "docker-container", name))
        return found

    def _scan_top_level(self) -> list[PodInfo]:
        """Neither systemd services nor Docker containers (a machine without systemd, a sandbox): each
        top-level cgroup is a workload of kind `cgroup`, so there is still something to look at."""
        return [self._workload(name, name, "cgroup", name) for name in self._children("")]

    def _workload(self, path: str, name: str, kind: str, container_id: str) -> PodInfo:
        return PodInfo(
            uid="", name=name, namespace="", node_name=self._node_name,
            containers=(ContainerInfo(name="", container_id=container_id,
                                      runtime="docker" if kind == "docker-container" else ""),),
            labels={WORKLOAD_KIND_LABEL: kind}, cgroup_path=path,
        )
