"""FilesystemCollector: capacity, usage and available bytes of a pod's volumes and containers' root
filesystems, from mountinfo + statvfs (the numbers `df` shows: usage = (blocks - bfree) * frsize,
available = bavail * frsize, capacity = blocks * frsize).

Pod volumes (pod-level points): every mount below the pod's `<kubelet-root>/pods/<uid>/volumes/`
found in the agent's own mountinfo (read once per cycle; the DaemonSet mounts the kubelet root at the
same path with HostToContainer propagation, so the volumes are visible and statvfs-able there).
A volume that is a plain directory on the node's disk (emptyDir without `medium: Memory`, configMap)
is not a mount and is not reported: statvfs would describe the node's disk, not the volume. Mounts
whose device is the same as the kubelet root's filesystem (bind mounts of the node's disk) are skipped
for the same reason. Attributes: `system.filesystem.mountpoint` (host path), `system.filesystem.type`,
`k8s.volume.name`, `k8s.volume.type` (emptyDir, secret, … from the kubelet's plugin directory).

Container root filesystem (container-level points, `system.filesystem.mountpoint` = "/"): the mount
at "/" in `/proc/<pid>/mountinfo` of a process of the container (cached per container id). It is
reported only when it is a filesystem of its own: an overlay (or aufs) root's free space and size are
those of the node's disk holding the image layers, and a root on the same device as the node's root
or kubelet filesystem is the node's disk too; neither is reported as the container's usage (the
writable layer's own bytes would need a walk of its upper directory, which this collector does not do
every cycle). A container root on a dedicated device (devicemapper/thin, a block volume, tmpfs) is
reported through `/proc/<pid>/root`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.problems import ProblemLog
from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentKind, InstrumentSpec
from kpod_otel.model import AttrValue, Target
from kpod_otel.procfs.parsers import MountEntry, parse_mountinfo
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

CAPACITY = "kpod.fs.capacity.bytes"
USAGE = "kpod.fs.usage.bytes"
AVAILABLE = "kpod.fs.available.bytes"
MOUNTPOINT_ATTR = "system.filesystem.mountpoint"

_G = InstrumentKind.GAUGE
FS_INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    InstrumentSpec(CAPACITY, _G, "By", "Size of the filesystem of a pod volume or container root"),
    InstrumentSpec(USAGE, _G, "By", "Bytes used on the filesystem of a pod volume or container root"),
    InstrumentSpec(AVAILABLE, _G, "By", "Bytes available to unprivileged users on that filesystem"),
)

# Filesystems whose size is that of another filesystem (the node's disk holding the layers).
_LAYERED_FS = frozenset({"overlay", "aufs", "fuse-overlayfs"})

# kubelet volume plugin directory -> k8s.volume.type (OTel semantic conventions spelling)
_VOLUME_TYPES = {
    "kubernetes.io~empty-dir": "emptyDir",
    "kubernetes.io~secret": "secret",
    "kubernetes.io~configmap": "configMap",
    "kubernetes.io~projected": "projected",
    "kubernetes.io~downward-api": "downwardAPI",
    "kubernetes.io~csi": "persistentVolumeClaim",
    "kubernetes.io~local-volume": "local",
    "kubernetes.io~nfs": "nfs",
}


@dataclass(frozen=True, slots=True)
class FsUsage:
    capacity: int
    usage: int
    available: int


def statvfs_usage(path: str) -> FsUsage:
    st = os.statvfs(path)
    return FsUsage(
        capacity=st.f_blocks * st.f_frsize,
        usage=(st.f_blocks - st.f_bfree) * st.f_frsize,
        available=st.f_bavail * st.f_frsize,
    )


@dataclass(frozen=True, slots=True)
class _RootFs:
    """A container's root mount as its own mountinfo shows it; `dedicated` if it is worth reporting."""

    fs_type: str
    device: str
    dedicated: bool


class FilesystemCollector(Collector):
    name = "filesystem"

    def __init__(
        self,
        fs: CgroupFS,
        stats: AgentStats,
        *,
        proc_root: str = "/proc",
        kubelet_root: str = "/var/lib/kubelet",
        mountinfo_path: str = "/proc/self/mountinfo",
    ) -> None:
        self._fs = fs
        self._problems = ProblemLog(self.name, stats, log)
        self._proc_root = proc_root
        self._pods_dir = os.path.join(os.path.normpath(kubelet_root), "pods") + "/"
        self._kubelet_root = kubelet_root
        self._mountinfo_path = mountinfo_path
        self._roots: dict[str, _RootFs] = {}  # container id -> its root mount

    def instruments(self) -> Sequence[InstrumentSpec]:
        return FS_INSTRUMENTS

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        snap = CollectorSnapshot()
        mounts = self._read_mounts()
        node_devices = self._node_devices(mounts)
        volumes = self._volume_mounts(mounts)
        live_containers: set[str] = set()
        for target in targets:
            for mount in volumes.get(target.volumes_dir.rstrip("/"), ()) if target.volumes_dir else ():
                if mount.device in node_devices:
                    continue
                self._add_volume(snap, target, mount)
            for container in target.containers:
                live_containers.add(container.container_id)
                self._add_root(snap, target, container.container_id, container.cgroup_path,
                               container.attributes(), node_devices)
        for gone in set(self._roots) - live_containers:
            del self._roots[gone]
        self._problems.prune(t.key for t in targets)
        return snap

    # --- volumes ------------------------------------------------------------------------------------

    def _read_mounts(self) -> list[MountEntry]:
        try:
            with open(self._mountinfo_path) as f:
                info = parse_mountinfo(f.read())
        except OSError as exc:
            self._problems.os_error("node", self._mountinfo_path, exc)
            return []
        if info.malformed:
            self._problems.report("node", "parse", f"{info.malformed} malformed lines in mountinfo",
                                  info.malformed)
        return list(info.mounts)

    def _node_devices(self, mounts: list[MountEntry]) -> set[str]:
        """maj:min of the node's own disk(s): the filesystem at "/" and the one holding the kubelet root."""
        devices = {m.device for m in mounts if m.mount_point == "/"}
        try:
            st = os.stat(self._kubelet_root)
            devices.add(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
        except OSError:
            pass
        return devices

    def _volume_mounts(self, mounts: list[MountEntry]) -> dict[str, list[MountEntry]]:
        """`<kubelet-root>/pods/<uid>/volumes` -> the mounts below it (the last mount at a path wins)."""
        by_point: dict[str, MountEntry] = {}
        for mount in mounts:
            if mount.mount_point.startswith(self._pods_dir):
                by_point[mount.mount_point] = mount
        result: dict[str, list[MountEntry]] = {}
        for point, mount in by_point.items():
            parts = point[len(self._pods_dir):].split("/")
            # <uid>/volumes/<plugin>/<name>[/...] (CSI volumes mount at <name>/mount)
            if len(parts) < 4 or parts[1] != "volumes":
                continue
            result.setdefault(self._pods_dir + parts[0] + "/volumes", []).append(mount)
        return result

    def _add_volume(self, snap: CollectorSnapshot, target: Target, mount: MountEntry) -> None:
        try:
            usage = statvfs_usage(mount.mount_point)
        except OSError as exc:
            self._problems.os_error(target.key, f"statvfs {mount.mount_point}", exc)
            return
        rel = mount.mount_point[len(target.volumes_dir.rstrip("/")) + 1:].split("/")
        attrs: dict[str, AttrValue] = {
            MOUNTPOINT_ATTR: mount.mount_point,
            "system.filesystem.type": mount.fs_type,
            "k8s.volume.name": rel[1] if len(rel) > 1 else rel[0],
            "k8s.volume.type": _VOLUME_TYPES.get(rel[0], rel[0]),
        }
        self._add_usage(snap, target.key, usage, attrs)

    @staticmethod
    def _add_usage(snap: CollectorSnapshot, key: str, usage: FsUsage, attrs: dict[str, AttrValue]) -> None:
        snap.add(key, CAPACITY, usage.capacity, attrs)
        snap.add(key, USAGE, usage.usage, attrs)
        snap.add(key, AVAILABLE, usage.available, attrs)

    # --- container root -----------------------------------------------------------------------------

    def _add_root(self, snap: CollectorSnapshot, target: Target, container_id: str, cgroup_path: str,
                  container_attrs: dict[str, AttrValue], node_devices: set[str]) -> None:
        root = self._roots.get(container_id)
        if root is not None and not root.dedicated:
            return  # an overlay/node-disk root: nothing to read, no pid needed
        try:
            pids = self._fs.pids(cgroup_path, 1)
        except OSError as exc:
            self._problems.os_error(target.key, f"cgroup.procs of {cgroup_path}", exc)
            return
        if not pids:
            return  # no process (yet, or any more): nothing to look through
        pid_dir = os.path.join(self._proc_root, str(pids[0]))
        try:
            if root is None:
                root = self._root_mount(pid_dir, node_devices)
                if root is None:
                    return
                self._roots[container_id] = root
                if not root.dedicated:
                    log.debug("container %s: root is %s on the node's disk, not reported", container_id,
                              root.fs_type)
                    return
            usage = statvfs_usage(os.path.join(pid_dir, "root"))
        except OSError as exc:
            self._problems.os_error(target.key, f"root filesystem of pid {pids[0]}", exc)
            return
        attrs = {**container_attrs, MOUNTPOINT_ATTR: "/", "system.filesystem.type": root.fs_type}
        self._add_usage(snap, target.key, usage, attrs)

    def _root_mount(self, pid_dir: str, node_devices: set[str]) -> _RootFs | None:
        with open(os.path.join(pid_dir, "mountinfo")) as f:
            info = parse_mountinfo(f.read())
        root_mount = info.by_mount_point().get("/")
        if root_mount is None:
            return None
        dedicated = root_mount.fs_type not in _LAYERED_FS and root_mount.device not in node_devices
        return _RootFs(root_mount.fs_type, root_mount.device, dedicated)
