"""Issue 3's proof through the CLI: `kpod-otel snapshot --format otlp-json` on this machine, with a test
pod's real cgroups and a real tmpfs volume in place, shows the kernel's numbers under that pod's Resource
and container."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from kpod_otel.cgroup.parsers import parse_memory_stat
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, systemd_burstable_pod
from tests.cgroup.test_filesystem_real import df, mount_tmpfs
from tests.cgroup.test_filesystem_real import kubelet_root as kubelet_root
from tests.cgroup.test_memory_real import MAP_AND_TOUCH
from tests.cgroup.test_memory_real import cold_file as cold_file


def points(doc: dict[str, Any], uid: str) -> dict[str, list[tuple[dict[str, str], int]]]:
    """metric -> [(attributes, value)] of the ResourceMetrics whose k8s.pod.uid is `uid`."""
    out: dict[str, list[tuple[dict[str, str], int]]] = {}
    for rm in doc["resourceMetrics"]:
        res = {a["key"]: a["value"].get("stringValue") for a in rm["resource"]["attributes"]}
        if res.get("k8s.pod.uid") != uid:
            continue
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                data = m.get("sum") or m.get("gauge") or {}
                for dp in data.get("dataPoints", []):
                    attrs = {a["key"]: next(iter(a["value"].values())) for a in dp.get("attributes", [])}
                    out.setdefault(m["name"], []).append((attrs, int(dp.get("asInt", dp.get("asDouble", 0)))))
    return out


def test_snapshot_otlp_json_shows_the_pods_numbers(cgroup_tree: CgroupTree, kubelet_root: str, cold_file: str,
                                                   tmp_path: Any) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    # a workload in the container: major faults on a file it maps after its pages were dropped
    worker = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", MAP_AND_TOUCH, cold_file],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and int(worker.stdout.readline()) > 0  # faults taken
    # an emptyDir volume on tmpfs with a file in it
    volume = os.path.join(kubelet_root, "pods", pod.uid, "volumes", "kubernetes.io~empty-dir", "cache")
    mount_tmpfs(volume, "8m")
    with open(os.path.join(volume, "f"), "wb") as f:
        f.write(b"x" * (3 << 20))
    cfg = tmp_path / "kpod.yaml"
    cfg.write_text(f"""kpod:
  profile: custom
  node-name: node-a
  collectors: {{memory: {{enabled: true}}, filesystem: {{enabled: true}}, disk: {{enabled: true}}}}
  discovery: {{mode: local}}
  bpf: {{enabled: false}}
  cgroup: {{root: /sys/fs/cgroup, proc-root: /proc, sys-root: /sys, kubelet-root: {kubelet_root}}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_"))}
    proc = subprocess.run([sys.executable, "-m", "kpod_otel", "snapshot", "--format", "otlp-json",
                           "--config", str(cfg)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    got = points(json.loads(proc.stdout), pod.uid)

    with open(os.path.join(CGROUP_ROOT, "memory", pod.container_path, "memory.stat")) as f:
        truth_faults = parse_memory_stat(f.read()).major_faults
    assert truth_faults > 0
    faults = {a["container.id"]: v for a, v in got["kpod.mem.major.page.faults"]}
    assert faults[pod.container_id] == truth_faults

    size, used, avail = df(volume)
    fs = {m: {a["system.filesystem.mountpoint"]: v for a, v in got[m]}
          for m in ("kpod.fs.capacity.bytes", "kpod.fs.usage.bytes", "kpod.fs.available.bytes")}
    assert (fs["kpod.fs.capacity.bytes"][volume], fs["kpod.fs.usage.bytes"][volume],
            fs["kpod.fs.available.bytes"][volume]) == (size, used, avail)
    assert used >= 3 << 20
