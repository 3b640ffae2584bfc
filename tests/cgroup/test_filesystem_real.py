"""FilesystemCollector on real mounts: tmpfs volumes in a kubelet-shaped pods/<uid>/volumes tree match
`df` after a file is written; a plain directory volume (on the node's disk) is not reported, nor a bind mount
of a node disk when the agent reads a host root that is not its own "/"; a
container whose root is an overlay on the node's disk gets no root-filesystem points, one whose root is
a filesystem of its own does; the overlay container's writable layer is measured like `du`."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.collectors.filesystem import (
    LAYER_ATTR,
    MOUNTPOINT_ATTR,
    FilesystemCollector,
    directory_usage,
)
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, random_uid, systemd_burstable_pod
from tests.conftest import require_root


def df(path: str) -> tuple[int, int, int]:
    """(size, used, avail) in bytes, as df prints them."""
    out = subprocess.run(["df", "-B1", "--output=size,used,avail", path], check=True, capture_output=True,
                         text=True).stdout.splitlines()[1].split()
    return int(out[0]), int(out[1]), int(out[2])


@pytest.fixture
def kubelet_root() -> Iterator[str]:
    require_root()
    root = tempfile.mkdtemp(prefix="kpt-cg-kubelet-")
    try:
        yield root
    finally:
        # unmount whatever the test mounted below the root, deepest first
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if f" {root}/" in line]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", root], check=False)


def mount_tmpfs(path: str, size: str) -> None:
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "kpt-cg-vol", path], check=True)


def test_tmpfs_volumes_match_df(kubelet_root: str) -> None:
    uid = random_uid()
    volumes = os.path.join(kubelet_root, "pods", uid, "volumes")
    cache = os.path.join(volumes, "kubernetes.io~empty-dir", "cache")
    token = os.path.join(volumes, "kubernetes.io~projected", "kube-api-access-x1")
    config = os.path.join(volumes, "kubernetes.io~configmap", "settings")  # a directory, not a mount
    mount_tmpfs(cache, "16m")
    mount_tmpfs(token, "1m")
    os.makedirs(config)
    with open(os.path.join(cache, "blob"), "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 123))
    with open(os.path.join(token, "token"), "w") as f:
        f.write("not-a-secret")

    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    (target,) = PodCgroupMapper(fs, stats, kubelet_root=kubelet_root).map(
        [PodInfo(uid=uid, name="p", namespace="n")])
    assert target.volumes_dir == volumes
    snap = FilesystemCollector(fs, stats, kubelet_root=kubelet_root).collect([target])
    points = snap.points[uid]

    by_mount: dict[str, dict[str, object]] = {}
    for metric, observations in points.items():
        for o in observations:
            entry = by_mount.setdefault(str(o.attributes[MOUNTPOINT_ATTR]), {"attrs": o.attributes})
            entry[metric] = o.value
    assert set(by_mount) == {cache, token}
    for path in (cache, token):
        size, used, avail = df(path)
        assert (by_mount[path]["kpod.fs.capacity.bytes"], by_mount[path]["kpod.fs.usage.bytes"],
                by_mount[path]["kpod.fs.available.bytes"]) == (size, used, avail)
    assert by_mount[cache]["kpod.fs.usage.bytes"] >= 3 * 1024 * 1024  # type: ignore[operator]
    assert by_mount[cache]["kpod.fs.capacity.bytes"] == 16 * 1024 * 1024
    assert by_mount[cache]["attrs"] == {MOUNTPOINT_ATTR: cache, "system.filesystem.type": "tmpfs",
                                        "k8s.volume.name": "cache", "k8s.volume.type": "emptyDir"}
    assert by_mount[token]["attrs"]["k8s.volume.type"] == "projected"  # type: ignore[index]
    assert stats.total("kpod.agent.errors") == 0


@pytest.fixture
def host_root() -> Iterator[str]:
    """A fake node: a tmpfs (its root disk) that a "host init" process will use as "/"."""
    require_root()
    root = tempfile.mkdtemp(prefix="kpt-cg-host-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "kpt-cg-hostdisk", root], check=True)
    try:
        yield root
    finally:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if f" {root}/" in line or f" {root} " in line]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        os.rmdir(root)


# The host's pid 1, as the agent sees it through `<proc-root>`: the first process of a new pid namespace,
# chrooted into the fake node's root, with that namespace's procfs mounted at the node's /proc.
HOST_INIT = """
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
os.chroot(sys.argv[1])
os.chdir("/")
os.makedirs("/proc", exist_ok=True)
if libc.mount(b"proc", b"/proc", b"proc", 0, None) != 0:
    raise OSError(ctypes.get_errno(), "mount proc")
print("ready", flush=True)
sys.stdin.read()
"""


def device_of(path: str) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def test_node_disks_are_the_hosts_not_the_agents(host_root: str, kubelet_root: str) -> None:
    """Inside the DaemonSet the agent's "/" is its image and only `<kubelet-root>/pods` comes from the host:
    bind mounts of the node's disks (local PVs, hostPath) must still be recognised, from the host's mount
    table (`<proc-root>/1/mountinfo`) and the device of the pods directory."""
    kubelet_disk = os.path.join(host_root, "var", "lib", "kubelet")  # the node's kubelet disk
    mount_tmpfs(kubelet_disk, "8m")
    os.makedirs(os.path.join(kubelet_disk, "pods"))
    os.makedirs(os.path.join(kubelet_disk, "data"))
    os.makedirs(os.path.join(host_root, "mnt", "disks", "pv1"))
    pods = os.path.join(kubelet_root, "pods")  # the DaemonSet's hostPath mount of the host's pods dir
    os.makedirs(pods)
    subprocess.run(["mount", "--bind", os.path.join(kubelet_disk, "pods"), pods], check=True)
    uid = random_uid()
    volumes = os.path.join(pods, uid, "volumes")
    on_root_disk = os.path.join(volumes, "kubernetes.io~local-volume", "pv-root")
    on_kubelet_disk = os.path.join(volumes, "kubernetes.io~local-volume", "pv-kubelet")
    cache = os.path.join(volumes, "kubernetes.io~empty-dir", "cache")
    for path, source in ((on_root_disk, os.path.join(host_root, "mnt", "disks", "pv1")),
                         (on_kubelet_disk, os.path.join(kubelet_disk, "data"))):
        os.makedirs(path)
        subprocess.run(["mount", "--bind", source, path], check=True)
    mount_tmpfs(cache, "4m")

    init = subprocess.Popen(["unshare", "--pid", "--fork", PYTHON, "-c", HOST_INIT, host_root],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert init.stdout is not None and init.stdout.readline() == b"ready\n"
        proc_root = os.path.join(host_root, "proc")
        with open(os.path.join(proc_root, "1", "mountinfo")) as f:
            host_mounts = {line.split()[4]: line.split()[2] for line in f}
        # the premise: the host's disks are neither the agent's "/" nor the disk of the kubelet root it sees
        assert host_mounts["/"] == device_of(host_root) != device_of("/")
        assert host_mounts["/var/lib/kubelet"] == device_of(pods) != device_of(kubelet_root)

        fs = CgroupFS.detect(CGROUP_ROOT)
        stats = AgentStats()
        (target,) = PodCgroupMapper(fs, stats, kubelet_root=kubelet_root).map(
            [PodInfo(uid=uid, name="p", namespace="n")])
        collector = FilesystemCollector(fs, stats, proc_root=proc_root, kubelet_root=kubelet_root)
        points = collector.collect([target]).points[uid]
    finally:
        assert init.stdin is not None
        init.stdin.close()
        init.wait(timeout=10)
    reported = {str(o.attributes[MOUNTPOINT_ATTR]): o.value for o in points["kpod.fs.capacity.bytes"]}
    assert reported == {cache: df(cache)[0]}  # the node disks' bind mounts are not the pod's
    assert stats.total("kpod.agent.errors") == 0


# The "container": a private mount namespace whose root is a filesystem the script mounts, like a
# runtime's pivot_root (chroot suffices: mountinfo shows mount points relative to the process's root).
ROOTED = """
import os, subprocess, sys, time
fstype, opts, root = sys.argv[1:4]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-t", fstype, "-o", opts, "kpt-cg-root", root], check=True)
os.chroot(root)
os.chdir("/")
print("ready", flush=True)
time.sleep(300)
"""


def test_container_root_filesystem(cgroup_tree: CgroupTree, kubelet_root: str) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    overlay_id, plain_id = secrets.token_hex(32), secrets.token_hex(32)
    overlay_path = cgroup_tree.make(f"{pod.pod_path}/cri-containerd-{overlay_id}.scope")
    plain_path = cgroup_tree.make(f"{pod.pod_path}/cri-containerd-{plain_id}.scope")
    base = os.path.join(kubelet_root, "layers")
    for d in ("lower", "upper", "work", "merged", "own"):
        os.makedirs(os.path.join(base, d))

    def start(rel: str, fstype: str, opts: str, root: str) -> subprocess.Popen[bytes]:
        proc = cgroup_tree.spawn(rel, ["unshare", "--mount", PYTHON, "-c", ROOTED, fstype, opts, root],
                                 stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    own = start(pod.container_path, "tmpfs", "size=8m", os.path.join(base, "own"))
    lower, upper, work = (os.path.join(base, d) for d in ("lower", "upper", "work"))
    (Path(lower) / "image-file").write_bytes(b"\2" * 300_000)  # in the image layer: not the container's
    layered = start(overlay_path, "overlay", f"lowerdir={lower},upperdir={upper},workdir={work}",
                    os.path.join(base, "merged"))
    cgroup_tree.sleeper(plain_path)  # shares the node's root filesystem
    # the containers write into their roots: 2 MiB into a tmpfs of its own, 1 MiB (+ a hard link to
    # it, counted once) into an overlay's writable layer
    with open(f"/proc/{own.pid}/root/data", "wb") as f:
        f.write(b"\1" * 2 * 1024 * 1024)
    layered_root = f"/proc/{layered.pid}/root"
    os.makedirs(f"{layered_root}/var/log")
    with open(f"{layered_root}/var/log/app.log", "wb") as f:
        f.write(b"\3" * 1024 * 1024)
    os.link(f"{layered_root}/var/log/app.log", f"{layered_root}/var/log/app.log.1")
    layer_bytes = int(subprocess.run(["du", "-s", "-B1", upper], check=True, capture_output=True,
                                     text=True).stdout.split()[0])
    assert layer_bytes >= 1024 * 1024

    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    (target,) = PodCgroupMapper(fs, stats, kubelet_root=kubelet_root).map([PodInfo(
        uid=pod.uid, name="p", namespace="n",
        containers=(ContainerInfo("own", pod.container_id), ContainerInfo("layered", overlay_id),
                    ContainerInfo("plain", plain_id)))])
    assert len(target.containers) == 3
    collector = FilesystemCollector(fs, stats, kubelet_root=kubelet_root)
    for _ in range(2):  # the second cycle uses the cached root mounts
        points = collector.collect([target]).points[pod.uid]
        values = {m: sorted((o.attributes["k8s.container.name"], o.attributes[MOUNTPOINT_ATTR],
                             o.attributes["system.filesystem.type"], o.attributes.get(LAYER_ATTR, ""),
                             o.value) for o in obs) for m, obs in points.items()}
        # the container with a filesystem of its own: statvfs of it. The overlay container: only its
        # writable layer's bytes (what du says), never the node disk's size. The node-root one: nothing.
        assert values == {
            "kpod.fs.capacity.bytes": [("own", "/", "tmpfs", "", 8 * 1024 * 1024)],
            "kpod.fs.usage.bytes": [("layered", "/", "overlay", "writable", layer_bytes),
                                    ("own", "/", "tmpfs", "", 2 * 1024 * 1024)],
            "kpod.fs.available.bytes": [("own", "/", "tmpfs", "", 6 * 1024 * 1024)],
        }
    assert stats.total("kpod.agent.errors") == 0


def test_directory_usage_matches_du(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(os.urandom(70_000))
    (tmp_path / "a" / "g").write_bytes(b"x" * 5)
    os.link(tmp_path / "a" / "g", tmp_path / "g-link")
    (tmp_path / "sparse").touch()
    os.truncate(tmp_path / "sparse", 10 * 1024 * 1024)  # 10 MiB long, no blocks
    os.symlink("a/g", tmp_path / "sym")
    du = int(subprocess.run(["du", "-s", "-B1", str(tmp_path)], check=True, capture_output=True,
                            text=True).stdout.split()[0])
    assert directory_usage(str(tmp_path), max_entries=100) == du
    assert directory_usage(str(tmp_path), max_entries=3) is None
    with pytest.raises(OSError):
        directory_usage(str(tmp_path / "missing"), max_entries=100)
