"""PodCgroupMapper on real cgroups: a systemd-style Burstable pod with a containerd container scope and a
sandbox scope, created in the v1 controllers and in the cgroup2 hierarchy (/sys/fs/cgroup/unified)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time

import pytest

from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, systemd_burstable_pod
from tests.conftest import require

UNIFIED = os.path.join(CGROUP_ROOT, "unified")


def handle_cgroup_id(path: str) -> int:
    """The cgroup id as the kernel exports it: the kernfs node id in the directory's file handle
    (name_to_handle_at(2)), which is what bpf_get_current_cgroup_id() returns."""
    libc = ctypes.CDLL(None, use_errno=True)

    class FileHandle(ctypes.Structure):
        _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                    ("f_handle", ctypes.c_ubyte * 16)]

    fh = FileHandle(16, 0)
    mount_id = ctypes.c_int()
    at_fdcwd = -100
    if libc.name_to_handle_at(at_fdcwd, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    assert fh.handle_bytes == 8
    return int.from_bytes(bytes(fh.f_handle[:8]), "little")


def bpftrace_cgroup_id(pid: int) -> int | None:
    """What bpf_get_current_cgroup_id() says for `pid` (bpftrace's `cgroup` builtin)."""
    if shutil.which("bpftrace") is None:
        return None
    prog = f'tracepoint:syscalls:sys_enter_getppid /pid == {pid}/ {{ printf("ID %llu\\n", cgroup); exit(); }}'
    out = subprocess.run(["timeout", "40", "bpftrace", "-e", prog], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("ID "):
            return int(line.split()[1])
    return None


@pytest.fixture
def fs() -> CgroupFS:
    return CgroupFS.detect(CGROUP_ROOT)


def test_layout_is_hybrid_here(fs: CgroupFS, cgroup_tree: CgroupTree) -> None:
    assert fs.version is CgroupVersion.HYBRID
    assert fs.layout.v2_dir == UNIFIED
    assert fs.layout.v1_controllers["blkio"] == os.path.join(CGROUP_ROOT, "blkio")
    assert fs.layout.v1_controllers["memory"] == os.path.join(CGROUP_ROOT, "memory")


def test_mapper_resolves_real_pod(fs: CgroupFS, cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    sandbox = cgroup_tree.sleeper(pod.sandbox_path)
    # the "app" process calls getppid() in a loop so that bpftrace can see its cgroup id
    app = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c",
                            "import os,time\nwhile True:\n os.getppid(); time.sleep(0.05)"])
    time.sleep(0.2)
    stats = AgentStats()
    mapper = PodCgroupMapper(fs, stats, kubelet_root="/var/lib/kubelet", node_name="node-a",
                             cluster_name="c1")
    info = PodInfo(uid=pod.uid, name="web-0", namespace="shop", qos_class="Burstable",
                   containers=(ContainerInfo("app", pod.container_id, "containerd"),))
    (target,) = mapper.map([info])

    assert target.key == pod.uid
    assert dict(target.resource) == {"k8s.pod.uid": pod.uid, "k8s.pod.name": "web-0",
                                     "k8s.namespace.name": "shop", "k8s.node.name": "node-a",
                                     "k8s.cluster.name": "c1"}
    assert target.cgroup_path == pod.pod_path
    assert target.cgroup_id == os.stat(os.path.join(UNIFIED, pod.pod_path)).st_ino
    assert target.volumes_dir == f"/var/lib/kubelet/pods/{pod.uid}/volumes"
    assert target.namespace == "shop"

    (container,) = target.containers
    assert container.cgroup_path == pod.container_path
    assert container.attributes() == {"container.id": pod.container_id, "k8s.container.name": "app"}
    v2_dir = os.path.join(UNIFIED, pod.container_path)
    assert container.cgroup_id == os.stat(v2_dir).st_ino
    # the kernel's own view of the id: the kernfs file handle, and the process's cgroup
    assert container.cgroup_id == handle_cgroup_id(v2_dir)
    with open(f"/proc/{app.pid}/cgroup") as f:
        v2_line = next(line for line in f.read().splitlines() if line.startswith("0::"))
    assert v2_line == f"0::/{pod.container_path}"

    sandbox_dir = os.path.join(UNIFIED, pod.sandbox_path)
    assert target.sandbox_cgroup_ids == (os.stat(sandbox_dir).st_ino,)
    # the sandbox's pid comes first (it holds the pod's network namespace)
    assert target.pids[0] == sandbox.pid
    assert app.pid in target.pids

    bpf_id = bpftrace_cgroup_id(app.pid)
    require(bpf_id is not None, "bpftrace could not report the cgroup id")
    assert bpf_id == container.cgroup_id


def test_mapper_follows_container_changes_and_pod_removal(fs: CgroupFS, cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    stats = AgentStats()
    mapper = PodCgroupMapper(fs, stats, node_name="node-a")
    info = PodInfo(uid=pod.uid, name="web-0", namespace="shop",  # QoS unknown: all classes searched
                   containers=(ContainerInfo("app", pod.container_id, "containerd"),))
    (first,) = mapper.map([info])
    assert [c.container_id for c in first.containers] == [pod.container_id]

    # the container restarts under a new id (CRI-O style scope this time, runtime not announced)
    new_id = "b" * 64
    cgroup_tree.make(f"{pod.pod_path}/crio-{new_id}.scope")
    cgroup_tree.make(f"{pod.pod_path}/crio-conmon-{new_id}.scope")  # CRI-O's monitor: not a container
    restarted = PodInfo(uid=pod.uid, name="web-0", namespace="shop",
                        containers=(ContainerInfo("app", new_id),))
    (second,) = mapper.map([restarted])
    new_path = f"{pod.pod_path}/crio-{new_id}.scope"
    # the previous instance keeps its own identity while its scope exists (not folded into the pod)
    assert [(c.container_id, c.cgroup_path) for c in second.containers] == [
        (new_id, new_path), (pod.container_id, pod.container_path)]
    assert set(second.sandbox_cgroup_ids) == {os.stat(os.path.join(UNIFIED, pod.sandbox_path)).st_ino}
    assert second.departed_containers == ()

    # the previous instance's scope is removed: reported once more as departed (its final eBPF counts),
    # then no more
    old_id = os.stat(os.path.join(UNIFIED, pod.container_path)).st_ino
    for h in ("memory", "blkio", "cpu", "pids", "unified"):
        os.rmdir(os.path.join(CGROUP_ROOT, h, pod.container_path))
    (after_removal,) = mapper.map([restarted])
    assert [c.container_id for c in after_removal.containers] == [new_id]
    assert [(c.container_id, c.cgroup_id) for c in after_removal.departed_containers] == [
        (pod.container_id, old_id)]
    (later,) = mapper.map([restarted])
    assert later.departed_containers == () and [c.container_id for c in later.containers] == [new_id]

    # the pod's cgroups disappear: one last Target with the old ids as departed, then none
    ids = {rel: os.stat(os.path.join(UNIFIED, rel)).st_ino for rel in (new_path, pod.sandbox_path, pod.pod_path)}
    for rel in (f"{pod.pod_path}/crio-conmon-{new_id}.scope", new_path, pod.sandbox_path, pod.pod_path):
        for h in ("memory", "blkio", "cpu", "pids", "unified"):
            os.rmdir(os.path.join(CGROUP_ROOT, h, rel))
    (final,) = mapper.map([restarted])
    assert final.containers == () and final.cgroup_path == ""
    assert [(c.container_id, c.cgroup_id) for c in final.departed_containers] == [(new_id, ids[new_path])]
    assert set(final.departed_cgroup_ids) == {ids[pod.sandbox_path], ids[pod.pod_path]}
    (third,) = mapper.map([restarted])
    assert third.cgroup_path == "" and third.containers == () and third.departed_containers == ()
    assert third.resource["k8s.pod.uid"] == pod.uid
