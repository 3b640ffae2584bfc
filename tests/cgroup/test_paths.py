"""Layout detection and pod/container cgroup resolution for every driver, QoS class and runtime, on
prepared trees (directories shaped like the kernel's cgroup filesystems) and this machine's mountinfo."""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from kpod_otel.cgroup.fs import (
    CgroupFS,
    CgroupVersion,
    detect_layout,
    layout_from_markers,
    layout_from_mountinfo,
)
from kpod_otel.cgroup.mapper import PodCgroupMapper, PodPathResolver
from kpod_otel.cgroup.paths import (
    KNOWN_ROOTS,
    KubepodsRoot,
    Runtime,
    container_dir_candidates,
    parse_container_dir_name,
    parse_pod_dir_name,
)
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.selfmetrics import AgentStats

RUNTIME_DIRS = {
    "containerd": "cri-containerd-{id}.scope",
    "cri-o": "crio-{id}.scope",
    "docker": "docker-{id}.scope",
    "bare": "{id}",
}
QOS = {"guaranteed": "Guaranteed", "burstable": "Burstable", "besteffort": "BestEffort"}


def v2_tree(tmp: Path) -> Path:
    root = tmp / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    return root


def make_cgroup(root: Path, rel: str, procs: str = "") -> Path:
    path = root / rel
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text(procs)
    return path


CASES = list(itertools.product(KNOWN_ROOTS, QOS, RUNTIME_DIRS))


@pytest.mark.parametrize("kroot, qos, runtime", CASES,
                         ids=[f"{r.path}-{q}-{rt}" for r, q, rt in CASES])
def test_resolution_every_driver_qos_runtime(tmp_path: Path, kroot: KubepodsRoot, qos: str,
                                             runtime: str) -> None:
    root = v2_tree(tmp_path)
    uid = str(uuid.uuid4())
    cid, sandbox_id = "a" * 64, "c" * 64
    pod_rel = kroot.pod_path(uid, qos)
    make_cgroup(root, pod_rel)
    container_dir = make_cgroup(root, f"{pod_rel}/{RUNTIME_DIRS[runtime].format(id=cid)}", "4242\n")
    sandbox_dir = make_cgroup(root, f"{pod_rel}/{RUNTIME_DIRS[runtime].format(id=sandbox_id)}", "4241\n")
    if runtime == "cri-o":
        make_cgroup(root, f"{pod_rel}/crio-conmon-{cid}.scope", "4240\n")  # not a container
    # another pod in the other QoS classes, so that a wrong guess would find a wrong directory
    for other in QOS:
        if other != qos:
            make_cgroup(root, kroot.pod_path(str(uuid.uuid4()), other))

    fs = CgroupFS(layout_from_markers(str(root)))  # type: ignore[arg-type]
    resolver = PodPathResolver(fs)
    announced_runtime = "" if runtime == "bare" else runtime
    for announced_qos in (QOS[qos], ""):  # known QoS first, then unknown (searched)
        assert resolver.pod_path(uid, announced_qos) == pod_rel
    for announced in (announced_runtime, ""):
        assert resolver.container_path(pod_rel, cid, announced) == f"{pod_rel}/{container_dir.name}"

    stats = AgentStats()
    mapper = PodCgroupMapper(fs, stats, kubelet_root="/var/lib/kubelet", node_name="n1")
    (target,) = mapper.map([PodInfo(uid=uid, name="p", namespace="ns", qos_class=QOS[qos],
                                    containers=(ContainerInfo("app", cid, announced_runtime),))])
    assert target.cgroup_path == pod_rel
    assert target.cgroup_id == os.stat(root / pod_rel).st_ino
    (container,) = target.containers
    assert container.cgroup_path == f"{pod_rel}/{container_dir.name}"
    assert container.cgroup_id == os.stat(container_dir).st_ino
    assert target.sandbox_cgroup_ids == (os.stat(sandbox_dir).st_ino,)  # conmon is not a sandbox
    assert target.pids == (4241, 4242)  # sandbox first
    assert stats.total("kpod.agent.errors") == 0


@pytest.mark.parametrize("kroot, qos", list(itertools.product(KNOWN_ROOTS, QOS)))
def test_pod_dir_names_round_trip(kroot: KubepodsRoot, qos: str) -> None:
    uid = str(uuid.uuid4())
    parsed = parse_pod_dir_name(kroot.pod_dir_name(uid, qos), parent_qos=qos)
    assert parsed is not None and parsed.uid == uid and parsed.qos == qos


def test_container_dir_names() -> None:
    cid = "0123456789abcdef" * 4
    assert parse_container_dir_name(f"cri-containerd-{cid}.scope").runtime is Runtime.CONTAINERD  # type: ignore[union-attr]
    assert parse_container_dir_name(f"crio-{cid}.scope").runtime is Runtime.CRIO  # type: ignore[union-attr]
    assert parse_container_dir_name(f"docker-{cid}.scope").runtime is Runtime.DOCKER  # type: ignore[union-attr]
    assert parse_container_dir_name(cid).runtime is Runtime.UNKNOWN  # type: ignore[union-attr]
    assert parse_container_dir_name(f"crio-conmon-{cid}.scope") is None
    assert parse_container_dir_name("cgroup.procs") is None
    assert parse_container_dir_name("system.slice") is None
    assert container_dir_candidates(cid, "cri-o")[0] == f"crio-{cid}.scope"


# --- layout detection ---------------------------------------------------------------------------------

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
V2_MOUNTINFO = ("30 23 0:26 / /host/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 "
                "cgroup2 rw,nsdelegate,memory_recursiveprot\n")


def test_layout_hybrid_from_mountinfo() -> None:
    layout = layout_from_mountinfo("/sys/fs/cgroup", HYBRID_MOUNTINFO)
    assert layout is not None and layout.version is CgroupVersion.HYBRID
    assert layout.v2_dir == "/sys/fs/cgroup/unified"
    assert layout.v1_controllers["cpu"] == layout.v1_controllers["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v1_controllers["name=systemd"] == "/sys/fs/cgroup/systemd"
    fs = CgroupFS(layout)
    assert fs.controller_dir("memory", "kubepods.slice") == "/sys/fs/cgroup/memory/kubepods.slice"
    assert fs.v2_dir("kubepods.slice") == "/sys/fs/cgroup/unified/kubepods.slice"
    assert fs.reference_dir("") == "/sys/fs/cgroup/memory"


def test_layout_v2_from_mountinfo_under_a_host_prefix() -> None:
    layout = layout_from_mountinfo("/host/sys/fs/cgroup", V2_MOUNTINFO)
    assert layout is not None and layout.version is CgroupVersion.V2
    fs = CgroupFS(layout)
    assert fs.controller_dir("io", "a/b") == "/host/sys/fs/cgroup/a/b"
    assert layout_from_mountinfo("/sys/fs/cgroup", V2_MOUNTINFO) is None  # not under that root


def test_layout_v1_and_hybrid_from_markers(tmp_path: Path) -> None:
    for ctrl in ("memory", "blkio", "cpu,cpuacct", "systemd"):
        make_cgroup(tmp_path, ctrl)
    layout = layout_from_markers(str(tmp_path))
    assert layout is not None and layout.version is CgroupVersion.V1
    assert layout.v1_controllers["cpuacct"] == str(tmp_path / "cpu,cpuacct")
    assert layout.v1_controllers["name=systemd"] == str(tmp_path / "systemd")
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    layout = layout_from_markers(str(tmp_path))
    assert layout is not None and layout.version is CgroupVersion.HYBRID
    assert layout.v2_dir == str(tmp_path / "unified")


def fs_type(path: str) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", path], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_layout_of_this_machine() -> None:
    layout = detect_layout("/sys/fs/cgroup")
    if fs_type("/sys/fs/cgroup") == "cgroup2fs":
        expected = CgroupVersion.V2
    elif os.path.isdir("/sys/fs/cgroup/unified") and fs_type("/sys/fs/cgroup/unified") == "cgroup2fs":
        expected = CgroupVersion.HYBRID
    else:
        expected = CgroupVersion.V1
    assert layout.version is expected
    for ctrl, path in layout.v1_controllers.items():
        assert fs_type(path) == "cgroupfs", ctrl
