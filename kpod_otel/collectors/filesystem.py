"""FilesystemCollector: capacity, usage and available bytes of a pod's volumes and containers' root
filesystems, from mountinfo + statvfs (the numbers `df` shows: usage = (blocks - bfree) * frsize,
available = bavail * frsize, capacity = blocks * frsize).

Pod volumes (pod-level points): every mount below the pod's `<kubelet-root>/pods/<uid>/volumes/`
found in the agent's own mountinfo (read once per cycle; the DaemonSet mounts the kubelet root at the
same path with HostToContainer propagation, so the volumes are visible and statvfs-able there).
A volume that is a plain directory on the node's disk (emptyDir without `medium: Memory`, configMap)
is not a mount and is not reported: statvfs would describe the node's disk, not the volume. Mounts
whose device is one of the node's disks (bind mounts of them: local PVs, hostPath volumes) are skipped for
the same reason. The node's disks are those of the HOST: the filesystem at "/" in the host's mount table
(`<proc>/1/mountinfo`; the agent's own "/" is its image) and the one holding `<kubelet-root>/pods` (the
directory the DaemonSet mounts from the host; the kubelet root above it is the image's).
Attributes: `system.filesystem.mountpoint` (host path), `system.filesystem.type`, `k8s.volume.name`,
`k8s.volume.type` (emptyDir, secret, … from the kubelet's plugin directory).

Container root filesystem (container-level points, `system.filesystem.mountpoint` = "/"): the mount
at "/" in `/proc/<pid>/mountinfo` of a process of the container (cached per container id). It is
statvfs-reported only when it is a filesystem of its own (devicemapper/thin, a block volume, tmpfs),
through `/proc/<pid>/root`. An overlay (or aufs) root's size and free space are those of the node's
disk holding the image layers, and a root on the same device as the node's root or kubelet filesystem
is the node's disk too: for those no capacity/available and no statvfs usage are reported. Instead,
an overlay root's `kpod.fs.usage.bytes` (attribute `kpod.fs.layer=writable`) is the container's own
writable layer: the bytes allocated below overlay's `upperdir` (what `du -s -B1` says), walked at most
every `layer_refresh` seconds per container, within `layer_budget` seconds of walking per cycle
(containers not measured in time keep their last value), and skipped beyond `layer_max_entries`
entries. The upper directory is a host path, read through `<proc>/1/root` (hostPID) or else at the
same path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kpod_otel.catalog import specs
from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.problems import ErrorCounter, ProblemLog
from kpod_otel.collector import Collector, CollectorSnapshot, InstrumentSpec
from kpod_otel.model import AttrValue, Target
from kpod_otel.procfs.parsers import MountEntry, MountInfo, parse_mountinfo

log = logging.getLogger(__name__)

CAPACITY = "kpod.fs.capacity.bytes"
USAGE = "kpod.fs.usage.bytes"
AVAILABLE = "kpod.fs.available.bytes"
MOUNTPOINT_ATTR = "system.filesystem.mountpoint"
LAYER_ATTR = "kpod.fs.layer"


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
    upperdir: str | None = None  # overlay's writable layer (a host path), when the root is an overlay


@dataclass(slots=True)
class _LayerUsage:
    bytes: int | None  # None: too many entries to walk (the layer is not reported)
    measured_at: float


def directory_usage(path: str, max_entries: int) -> int | None:
    """Bytes allocated to the files below `path` (as `du -s -B1` counts them: allocated blocks, each
    hard-linked inode once, not crossing into other filesystems), or None beyond `max_entries`.

    Raises OSError if `path` itself cannot be read."""
    root_dev = os.lstat(path).st_dev
    seen: set[tuple[int, int]] = set()
    total = 0
    entries = 0
    stack = [path]
    first = True
    while stack:
        directory = stack.pop()
        try:
            it = os.scandir(directory)
        except OSError:
            if first:
                raise
            continue  # removed while we walked: the next measurement sees the new state
        first = False
        with it:
            for entry in it:
                entries += 1
                if entries > max_entries:
                    return None
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != root_dev:
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total + os.lstat(path).st_blocks * 512


class FilesystemCollector(Collector):
    name = "filesystem"

    def __init__(
        self,
        fs: CgroupFS,
        stats: ErrorCounter,
        *,
        proc_root: str = "/proc",
        kubelet_root: str = "/var/lib/kubelet",
        mountinfo_path: str = "/proc/self/mountinfo",
        layer_refresh: float = 60.0,
        layer_budget: float = 0.05,
        layer_max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fs = fs
        self._problems = ProblemLog(self.name, stats, log)
        self._proc_root = proc_root
        self._pods_dir = os.path.join(os.path.normpath(kubelet_root), "pods") + "/"
        self._kubelet_root = kubelet_root
        self._mountinfo_path = mountinfo_path
        self._host_mountinfo_path = os.path.join(proc_root, "1", "mountinfo")
        self._host_root_device: str | None = None  # the host's "/" never changes: read until known
        self._roots: dict[str, _RootFs] = {}  # container id -> its root mount
        # mountinfo line -> its parse; kept for the lines of the last read only (mounts come and go)
        self._mount_lines: dict[str, MountInfo] = {}
        self._layers: dict[str, _LayerUsage] = {}  # container id -> last writable-layer measurement
        self._layer_refresh = layer_refresh
        self._layer_budget = layer_budget
        self._layer_max_entries = layer_max_entries
        self._clock = clock
        self._cycle_started = 0.0

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(CAPACITY, USAGE, AVAILABLE)

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        snap = CollectorSnapshot()
        self._cycle_started = self._clock()
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
        for gone in set(self._layers) - live_containers:
            del self._layers[gone]
        self._problems.prune(t.key for t in targets)
        return snap

    # --- volumes ------------------------------------------------------------------------------------

    def _read_mounts(self) -> list[MountEntry]:
        text = self._problems.read("node", self._mountinfo_path)
        if text is None:
            return []
        # The node's mount table barely changes between cycles: each line is parsed once (a few hundred
        # lines on a node cost ~2 ms per cycle to parse again; bench/node_cycle.py).
        previous, parsed = self._mount_lines, {}
        mounts: list[MountEntry] = []
        malformed = 0
        for line in text.split("\n"):
            info = previous.get(line)
            if info is None:
                info = parse_mountinfo(line)
            parsed[line] = info
            mounts.extend(info.mounts)
            malformed += info.malformed
        self._mount_lines = parsed
        if malformed:
            self._problems.report("node", "parse", f"{malformed} malformed lines in mountinfo", malformed)
        return mounts

    def _node_devices(self, mounts: list[MountEntry]) -> set[str]:
        """maj:min of the node's own disk(s): the host's "/" and the filesystem holding the kubelet's pods."""
        devices: set[str] = set()
        host_root = self._host_root()
        if host_root is not None:
            devices.add(host_root)
        else:  # no host mount table (not hostPID, or no proc-root): our own "/" is the best guess
            devices.update(m.device for m in mounts if m.mount_point == "/")
        for path in (self._pods_dir, self._kubelet_root):
            try:
                st = os.stat(path)
            except OSError:
                continue
            devices.add(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
            break
        return devices

    def _host_root(self) -> str | None:
        """maj:min of "/" in the host's mount table (`<proc>/1/mountinfo`), read until it is known."""
        if self._host_root_device is None:
            try:
                with open(self._host_mountinfo_path) as f:
                    root = parse_mountinfo(f.read()).by_mount_point().get("/")
            except OSError:
                return None
            self._host_root_device = root.device if root is not None else None
        return self._host_root_device

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
            # an overlay/node-disk root: no statvfs; the writable layer's own bytes if it has one
            self._add_layer(snap, target.key, container_id, root, container_attrs)
            return
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
                    log.debug("container %s: root is %s on the node's disk: statvfs not reported",
                              container_id, root.fs_type)
                    self._add_layer(snap, target.key, container_id, root, container_attrs)
                    return
            usage = statvfs_usage(os.path.join(pid_dir, "root"))
        except OSError as exc:
            self._problems.os_error(target.key, f"root filesystem of pid {pids[0]}", exc)
            return
        attrs = {**container_attrs, MOUNTPOINT_ATTR: "/", "system.filesystem.type": root.fs_type}
        self._add_usage(snap, target.key, usage, attrs)

    def _add_layer(self, snap: CollectorSnapshot, key: str, container_id: str, root: _RootFs,
                   container_attrs: dict[str, AttrValue]) -> None:
        """`kpod.fs.usage.bytes` of an overlay root = the bytes in its upper (writable) directory,
        re-measured at most every `layer_refresh` seconds and within a per-cycle time budget."""
        if root.upperdir is None:
            return
        cached = self._layers.get(container_id)
        now = self._clock()
        due = cached is None or now - cached.measured_at >= self._layer_refresh
        if due and now - self._cycle_started < self._layer_budget:
            readable, measured = self._measure_layer(key, root.upperdir)
            if readable:  # a layer too large to walk is remembered too, so it is not re-walked soon
                cached = self._layers[container_id] = _LayerUsage(measured, now)
        if cached is None or cached.bytes is None:
            return
        attrs = {**container_attrs, MOUNTPOINT_ATTR: "/", "system.filesystem.type": root.fs_type,
                 LAYER_ATTR: "writable"}
        snap.add(key, USAGE, cached.bytes, attrs)

    def _measure_layer(self, key: str, upperdir: str) -> tuple[bool, int | None]:
        """(readable, bytes) of the upper directory; bytes None when it has too many entries. It is a
        host path: seen through the host's pid 1 root when the agent shares the host's pid namespace,
        else at the same path."""
        candidates = (os.path.join(self._proc_root, "1", "root") + upperdir, upperdir)
        last: OSError | None = None
        for path in candidates:
            try:
                used = directory_usage(path, self._layer_max_entries)
            except OSError as exc:
                last = exc
                continue
            if used is None:
                self._problems.report(key, "too_large", f"writable layer {upperdir} has more than "
                                      f"{self._layer_max_entries} entries; not measured")
            return True, used
        if last is not None:
            self._problems.os_error(key, f"writable layer {upperdir}", last)
        return False, None

    def _root_mount(self, pid_dir: str, node_devices: set[str]) -> _RootFs | None:
        with open(os.path.join(pid_dir, "mountinfo")) as f:
            root_mount = parse_mountinfo(f.read()).by_mount_point().get("/")
        if root_mount is None:
            return None
        dedicated = root_mount.fs_type not in _LAYERED_FS and root_mount.device not in node_devices
        upperdir = root_mount.super_option("upperdir") if root_mount.fs_type == "overlay" else None
        return _RootFs(root_mount.fs_type, root_mount.device, dedicated, upperdir or None)
