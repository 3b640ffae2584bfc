"""The cgroup layer built from a Config by the assembly, end to end on this machine: local discovery finds a
real test pod, the mapper resolves it, and the profile's collectors report its memory counters under its key."""

from __future__ import annotations

import os

from kpod_otel.assembly import build_collectors, cgroup_fs, local_provider, pod_mapper
from kpod_otel.cgroup.parsers import parse_memory_stat
from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
from kpod_otel.collectors.memory import MAJOR_FAULTS, OOM_KILLS, USAGE, MemoryCollector
from kpod_otel.config import parse_config
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import bpf_config, bpf_env_of
from tests.cgroup.conftest import CGROUP_ROOT, CgroupTree, systemd_burstable_pod
from tests.conftest import require_bcc

CONFIG = """
kpod:
  profile: custom
  collectors: {memory: {enabled: true}, disk: {enabled: true}, network: {enabled: true},
               filesystem: {enabled: true}}
  bpf: {enabled: false}
  node-name: node-a
  cluster-name: lab
  discovery:
    mode: local
  cgroup:
    root: /sys/fs/cgroup
    proc-root: /proc
    sys-root: /sys
    kubelet-root: /var/lib/kubelet
"""


def test_config_to_snapshot(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    cgroup_tree.sleeper(pod.container_path)
    config = parse_config(CONFIG, env={})
    stats = AgentStats()
    fs = cgroup_fs(config)
    collectors = build_collectors(config, fs, stats)
    assert [c.name for c in collectors] == ["memory", "disk", "network", "filesystem", "agent"]

    provider = local_provider(config, fs)
    provider.start()
    targets = [t for t in pod_mapper(config, fs, stats).map(provider.pods()) if t.key == pod.uid]
    assert len(targets) == 1
    assert dict(targets[0].resource) == {"k8s.pod.uid": pod.uid, "k8s.node.name": "node-a",
                                         "k8s.cluster.name": "lab"}
    snaps = {c.name: c.collect(targets) for c in collectors}
    for c in collectors:
        c.close()
    # local discovery cannot name containers; the empty sandbox scope is reported as a container too
    # (only a scope whose single process is `pause` is known to be the sandbox)
    (faults,) = [o for o in snaps["memory"].points[pod.uid][MAJOR_FAULTS]
                 if o.attributes["container.id"] == pod.container_id]
    with open(os.path.join(CGROUP_ROOT, "memory", pod.container_path, "memory.stat")) as f:
        assert faults.value == parse_memory_stat(f.read()).major_faults
    assert faults.attributes == {"container.id": pod.container_id}
    # the sleeper shares the node's network namespace and root filesystem: neither is the pod's
    assert pod.uid not in snaps["network"].points
    assert pod.uid not in snaps["filesystem"].points


def test_memory_files_serve_only_what_ebpf_cannot_see(cgroup_tree: CgroupTree) -> None:
    """With the eBPF memory program loaded, OOM kills of containers with a cgroup v2 id are its; a workload
    that exists only in the v1 memory hierarchy (no v2 id, invisible to eBPF) still gets its counters from
    the files. Major faults come from the files for every container (one definition)."""
    from kpod_otel.model import ContainerInfo, PodInfo

    require_bcc()
    pod = systemd_burstable_pod(cgroup_tree)
    v1_only = cgroup_tree.make("kpt-cg-v1-only-workload", hierarchies=("memory",))
    config = parse_config(CONFIG, env={})
    stats = AgentStats()
    fs = cgroup_fs(config)
    bpf_env = bpf_env_of(bpf_config())
    memory = MemoryCollector(fs, stats, ebpf=MemoryBpfCollector(stats, bpf_env))
    assert memory.ebpf_loaded
    workload = PodInfo(uid="", name="w", namespace="", cgroup_path=v1_only)
    announced = PodInfo(uid=pod.uid, name="p", namespace="n", qos_class="Burstable",
                        containers=(ContainerInfo("app", pod.container_id, "containerd"),))
    targets = pod_mapper(config, fs, stats).map([announced, workload])
    assert [c.cgroup_id is not None for c in targets[0].containers] == [True]
    assert [c.cgroup_id for c in targets[1].containers] == [None]
    try:
        snap = memory.collect(targets)
    finally:
        memory.close()
    # its OOM kills are eBPF's (nothing ran in it), not read from the files; its major faults (for every
    # container, this one included) and its usage are always the files'
    assert OOM_KILLS not in snap.points[pod.uid]
    assert [p.attributes["container.id"] for p in snap.points[pod.uid][MAJOR_FAULTS]] == [pod.container_id]
    assert USAGE in snap.points[pod.uid]
    (faults,) = snap.points[workload.key][MAJOR_FAULTS]
    with open(os.path.join(CGROUP_ROOT, "memory", v1_only, "memory.stat")) as f:
        assert faults.value == parse_memory_stat(f.read()).major_faults
