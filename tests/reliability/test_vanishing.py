"""A pod whose cgroups and network namespace vanish in the middle of a cycle (after discovery mapped it,
before the collectors read it) loses only its own points that cycle; the other pod's points are whole;
the failures are counted in kpod.agent.errors. Real cgroups, real processes in their own netns."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kpod_otel.assembly import build_collectors, cgroup_fs, pod_mapper
from kpod_otel.config import BpfConfig, CgroupConfig, Config, Profile
from kpod_otel.export.pipeline import MetricsPipeline
from kpod_otel.model import ContainerInfo, PodInfo
from kpod_otel.points import NO_RECORDED_VALUE
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, HIERARCHIES, CgroupTree, random_container_id, random_uid
from tests.export.helpers import by_resource


# A process in a network namespace of its own with an interface up (the pod has one to report), that
# reads the disk with O_DIRECT (real block I/O, counted under its cgroup's throttle rule).
def container_command(device: str) -> list[str]:
    return ["unshare", "--net", "sh", "-c",
            "ip link add kpt-rel-v0 type veth peer name kpt-rel-v1 && ip link set kpt-rel-v0 up && "
            f"ip link set kpt-rel-v1 up && dd if={device} of=/dev/null bs=4096 count=8 iflag=direct "
            "status=none; exec sleep 600"]


def first_disk() -> tuple[str, str]:
    """(/dev path, maj:min) of a real block device to read from."""
    for name in sorted(os.listdir("/sys/block")):
        if name.startswith(("vd", "sd", "nvme", "xvd")):
            return f"/dev/{name}", Path(f"/sys/block/{name}/dev").read_text().strip()
    raise AssertionError("no block device")


def make_pod(tree: CgroupTree, name: str) -> tuple[PodInfo, str, str]:
    uid, cid = random_uid(), random_container_id()
    base = f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid.replace('-', '_')}.slice"
    scope = f"{base}/cri-containerd-{cid}.scope"
    tree.make(scope)
    device, majmin = first_disk()
    # v1 throttle statistics are kept only for devices with a rule: a limit nothing here reaches
    Path(CGROUP_ROOT, "blkio", scope, "blkio.throttle.read_bps_device").write_text(f"{majmin} 1099511627776\n")
    tree.spawn(scope, container_command(device))
    pod = PodInfo(uid=uid, name=name, namespace="kpt-rel", qos_class="BestEffort",
                  containers=(ContainerInfo("app", cid, "containerd"),))
    return pod, base, scope


def metric_names(request_entry: dict[str, object]) -> set[str]:
    return {k for k in request_entry if k != "resource"}


def valued_metric_names(request_entry: dict[str, Any]) -> set[str]:
    """Metrics with at least one point that carries a value (not an end-of-series marker)."""
    return {k for k, m in request_entry.items() if k != "resource"
            and any(not dp.flags & NO_RECORDED_VALUE for dp in getattr(m, m.WhichOneof("data")).data_points)}


def errors_total(stats: AgentStats) -> float:
    return stats.total("kpod.agent.errors")


def test_pod_vanishing_mid_cycle_affects_only_its_points(cgroup_tree: CgroupTree, tmp_path: Path) -> None:
    # the cgroup/procfs collectors only (eBPF off): their points are the ones that vanish with the pod
    config = Config(profile=Profile.CUSTOM, node_name="kpt-rel-node", bpf=BpfConfig(enabled=False),
                    collectors={"memory": True, "disk": True, "network": True, "filesystem": True},
                    cgroup=CgroupConfig(root=CGROUP_ROOT, proc_root="/proc", sys_root="/sys",
                                        kubelet_root=str(tmp_path / "kubelet")))
    stats = AgentStats()
    fs = cgroup_fs(config)
    mapper = pod_mapper(config, fs, stats)
    collectors = build_collectors(config, fs, stats)
    pipeline = MetricsPipeline(collectors, {"service.name": "kpod-otel"}, stats)
    a, _, _ = make_pod(cgroup_tree, "kpt-rel-stays")
    b, b_base, b_scope = make_pod(cgroup_tree, "kpt-rel-vanishes")
    b_proc = cgroup_tree.procs[-1]
    time.sleep(0.5)  # both processes have entered their namespaces and read the disk
    first = by_resource([pipeline.collect(mapper.map([a, b])).request])
    assert {"kpod.net.iface.rx.bytes", "kpod.mem.major.page.faults", "kpod.disk.reads"} <= metric_names(first[a.uid])
    assert metric_names(first[b.uid]) == metric_names(first[a.uid])
    errors_before = errors_total(stats)

    targets = mapper.map([a, b])  # discovery and mapping done: the cycle has begun
    b_proc.kill()  # the pod goes away: its process (so its netns) and its cgroups
    b_proc.wait()
    for rel in (b_scope, b_base):
        for h in HIERARCHIES:
            os.rmdir(os.path.join(CGROUP_ROOT, h, rel))
        cgroup_tree.created.remove(rel)
    second = by_resource([pipeline.collect(targets).request])

    assert metric_names(second[a.uid]) == metric_names(first[a.uid])  # the other pod is whole
    b_entry = second.get(b.uid, {"resource": {}})
    # the vanished pod lost its points this cycle; the series it could not read end (flagged points)
    assert valued_metric_names(b_entry) < metric_names(first[b.uid])
    assert metric_names(b_entry) - valued_metric_names(b_entry), "no end-of-series marker"
    by_kind = {(at["kpod.component"], at["error.type"]): v for name, at, v in stats.items()
               if name == "kpod.agent.errors"}
    assert errors_total(stats) > errors_before, by_kind
    agent_errors = second["kpod-otel"]["kpod.agent.errors"].sum.data_points
    assert sum(dp.as_int or dp.as_double for dp in agent_errors) == errors_total(stats)  # exported too
    # the vanished pod's failures are counted per collector that tried to read it
    # each collector that tried to read the vanished pod counted it: its cgroup files and its netns
    assert by_kind.get(("disk", "vanished"), 0) >= 1, by_kind
    assert by_kind.get(("memory", "vanished"), 0) >= 1, by_kind
    assert by_kind.get(("network", "vanished"), 0) >= 1, by_kind
