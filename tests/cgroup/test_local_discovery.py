"""LocalCgroupProvider: Kubernetes pods from the real kubepods tree of this machine, and non-Kubernetes
workloads (systemd services, Docker containers) from a private, real cgroup hierarchy the test mounts."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpod_otel.cgroup.fs import CgroupFS, CgroupVersion
from kpod_otel.cgroup.mapper import WORKLOAD_KIND_LABEL, PodCgroupMapper
from kpod_otel.collectors.memory import MemoryCollector
from kpod_otel.discovery.local import LocalCgroupProvider
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, CgroupTree, systemd_burstable_pod
from tests.conftest import require_root

UNIFIED = os.path.join(CGROUP_ROOT, "unified")


@pytest.fixture
def pause_binary() -> Iterator[str]:
    """A copy of sleep named `pause`, so its process's comm is "pause" like the real sandbox's."""
    directory = tempfile.mkdtemp(prefix="kpt-cg-pause-")
    path = os.path.join(directory, "pause")
    shutil.copy(shutil.which("sleep") or "/bin/sleep", path)
    yield path
    shutil.rmtree(directory)


def test_finds_real_kubepods_pod(cgroup_tree: CgroupTree, pause_binary: str) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    sandbox = cgroup_tree.spawn(pod.sandbox_path, [pause_binary, "300"])
    app = cgroup_tree.sleeper(pod.container_path)
    fs = CgroupFS.detect(CGROUP_ROOT)
    provider = LocalCgroupProvider(fs, proc_root="/proc", node_name="node-a")
    provider.start()
    # other engineers' test pods may be there too: look only for ours
    (found,) = [p for p in provider.pods() if p.uid == pod.uid]
    assert found.qos_class == "Burstable" and found.cgroup_path == pod.pod_path
    assert found.name == "" and found.namespace == ""
    assert [(c.container_id, c.runtime) for c in found.containers] == [(pod.container_id, "containerd")]

    stats = AgentStats()
    (target,) = PodCgroupMapper(fs, stats, node_name="node-a").map([found])
    assert dict(target.resource) == {"k8s.pod.uid": pod.uid, "k8s.node.name": "node-a"}
    assert target.sandbox_cgroup_ids == (os.stat(os.path.join(UNIFIED, pod.sandbox_path)).st_ino,)
    (container,) = target.containers
    assert container.cgroup_id == os.stat(os.path.join(UNIFIED, pod.container_path)).st_ino
    assert container.attributes() == {"container.id": pod.container_id}
    assert target.pids[:2] == (sandbox.pid, app.pid)


@pytest.fixture
def private_hierarchy() -> Iterator[str]:
    """A real, empty cgroup v1 hierarchy (named, no controllers) that only this test uses."""
    require_root()
    mountpoint = tempfile.mkdtemp(prefix="kpt-cg-hier-")
    # A fixed name: if a run ever leaves the hierarchy behind, the next mount reuses it instead of
    # adding another one to the kernel.
    name = "kpt-cg-private"
    subprocess.run(["mount", "-t", "cgroup", "-o", f"none,name={name}", name, mountpoint], check=True)
    try:
        yield mountpoint
    finally:
        for dirpath, _, files in os.walk(mountpoint, topdown=False):
            if "cgroup.procs" in files and dirpath != mountpoint:
                for pid in Path(dirpath, "cgroup.procs").read_text().split():
                    Path(mountpoint, "cgroup.procs").write_text(pid)  # back to the root cgroup
                os.rmdir(dirpath)
        # rmdir completes asynchronously; a hierarchy unmounted while a child is still dying is never
        # destroyed (kernel: cgroup_kill_sb). Give the children time to go.
        time.sleep(0.5)
        subprocess.run(["umount", mountpoint], check=True)
        os.rmdir(mountpoint)


def test_workloads_without_kubernetes(private_hierarchy: str) -> None:
    root = private_hierarchy
    docker_id = secrets.token_hex(32)
    other_id = secrets.token_hex(32)
    cgroups = ["system.slice/kpt-cg-web.service", f"system.slice/docker-{docker_id}.scope",
               "system.slice/kpt-cg-data.mount", f"docker/{other_id}"]
    for rel in cgroups:
        os.makedirs(os.path.join(root, rel))
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        Path(root, "system.slice/kpt-cg-web.service/cgroup.procs").write_text(str(sleeper.pid))
        fs = CgroupFS.detect(root)
        assert fs.version is CgroupVersion.V1
        provider = LocalCgroupProvider(fs, node_name="laptop")
        pods = {p.cgroup_path: p for p in provider.pods()}
        assert set(pods) == {"system.slice/kpt-cg-web.service", f"system.slice/docker-{docker_id}.scope",
                             f"docker/{other_id}"}  # the .mount unit is no workload
        web = pods["system.slice/kpt-cg-web.service"]
        assert web.uid == "" and web.name == "kpt-cg-web.service"
        assert web.labels[WORKLOAD_KIND_LABEL] == "systemd-service"
        assert pods[f"docker/{other_id}"].labels[WORKLOAD_KIND_LABEL] == "docker-container"

        stats = AgentStats()
        targets = {t.key: t for t in PodCgroupMapper(fs, stats, node_name="laptop").map(pods.values())}
        web_t = targets["cgroup:system.slice/kpt-cg-web.service"]
        assert dict(web_t.resource) == {"kpod.workload.cgroup": "system.slice/kpt-cg-web.service",
                                        "kpod.workload.name": "kpt-cg-web.service",
                                        "kpod.workload.kind": "systemd-service", "host.name": "laptop"}
        assert web_t.pids == (sleeper.pid,)
        (container,) = web_t.containers
        assert container.cgroup_path == "system.slice/kpt-cg-web.service"
        assert container.attributes() == {"container.id": "kpt-cg-web.service"}
        docker_t = targets[f"cgroup:system.slice/docker-{docker_id}.scope"]
        assert docker_t.containers[0].container_id == docker_id
        assert docker_t.cgroup_id is None  # no cgroup2 in this layout: eBPF cannot attribute it
        # a collector whose controller is not mounted here reports nothing and raises nothing
        assert MemoryCollector(fs, stats).collect(list(targets.values())).points == {}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_rescan_interval(private_hierarchy: str) -> None:
    root = private_hierarchy
    now = [0.0]
    provider = LocalCgroupProvider(CgroupFS.detect(root), rescan_interval=10, clock=lambda: now[0])
    os.makedirs(os.path.join(root, "system.slice/kpt-cg-a.service"))
    assert [p.name for p in provider.pods()] == ["kpt-cg-a.service"]
    os.makedirs(os.path.join(root, "system.slice/kpt-cg-b.service"))
    assert [p.name for p in provider.pods()] == ["kpt-cg-a.service"]  # cached
    now[0] = 11.0
    assert sorted(p.name for p in provider.pods()) == ["kpt-cg-a.service", "kpt-cg-b.service"]
    assert provider.healthy()


def test_top_level_cgroups_without_systemd_or_docker(private_hierarchy: str) -> None:
    os.makedirs(os.path.join(private_hierarchy, "kpt-cg-batch", "worker-1"))
    os.makedirs(os.path.join(private_hierarchy, "kpt-cg-api"))
    fs = CgroupFS.detect(private_hierarchy)
    pods = LocalCgroupProvider(fs).pods()
    assert sorted((p.cgroup_path, p.labels[WORKLOAD_KIND_LABEL]) for p in pods) == [
        ("kpt-cg-api", "cgroup"), ("kpt-cg-batch", "cgroup")]
    stats = AgentStats()
    targets = PodCgroupMapper(fs, stats).map(pods)
    assert sorted(t.key for t in targets) == ["cgroup:kpt-cg-api", "cgroup:kpt-cg-batch"]
    assert all(t.containers[0].cgroup_path == t.cgroup_path for t in targets)
