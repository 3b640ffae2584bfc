"""Issue 4's proof: the fake API server announces pods whose cgroups this test created in the real
hierarchies; `kpod-otel run --once` exports one Resource per announced pod and none for excluded ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cgroup.conftest import CgroupTree, require_cgroups
from tests.export.helpers import by_resource
from tests.fakes.k8s import NODE, FakeCluster, FakeServer, make_pod
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.tls import TestCA

TOKEN = "kpt-e2e-token-0123456789"


def pod_cgroups(tree: CgroupTree, pod: dict) -> None:
    """Create the systemd-driver cgroups the kubelet would have made for `pod`, with a sleeper each."""
    uid, qos = pod["metadata"]["uid"], pod["status"]["qosClass"]
    u = uid.replace("-", "_")
    if qos == "Guaranteed":
        base = f"kubepods.slice/kubepods-pod{u}.slice"
    else:
        q = qos.lower()
        base = f"kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{u}.slice"
    tree.make(base)
    for st in pod["status"]["containerStatuses"]:
        cid = st["containerID"].split("://", 1)[1]
        scope = tree.make(f"{base}/cri-containerd-{cid}.scope")
        tree.sleeper(scope)


def kubeconfig(path: Path, api: FakeServer, ca: TestCA) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {{server: "{api.url}", certificate-authority: "{ca.ca_file}"}}
users:
- name: agent
  user: {{token: "{TOKEN}"}}
contexts:
- name: e2e
  context: {{cluster: e2e, user: agent}}
current-context: e2e
""")
    return path


def test_run_once_exports_one_resource_per_announced_pod(tmp_path: Path) -> None:
    require_cgroups()
    ca = TestCA(tmp_path, "kpt-e2e-ca")
    cluster = FakeCluster()
    api = FakeServer(cluster, ca.issue("kpt-e2e-api"), token=TOKEN, role="api").up()
    receiver = OtlpReceiver().start("grpc")
    tree = CgroupTree()
    try:
        pods = [
            make_pod("web", "shop", qos="Guaranteed"),
            make_pod("worker", "shop", qos="Burstable", containers=("main", "sidecar")),
            make_pod("dns", "kube-system", qos="BestEffort"),
        ]
        for p in pods:
            cluster.add_pod(p)
            pod_cgroups(tree, p)
        cfg = tmp_path / "kpod.yaml"
        cfg.write_text(f"""kpod:
  profile: custom
  node-name: {NODE}
  collectors:
    memory: {{enabled: true}}
    disk: {{enabled: true}}
  discovery:
    mode: informer
    kubeconfig: {kubeconfig(tmp_path / "kubeconfig", api, ca)}
  bpf:
    enabled: false
  cgroup:
    root: /sys/fs/cgroup
    proc-root: /proc
    sys-root: /sys
    kubelet-root: {tmp_path}/kubelet
  health:
    port: 0
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_", "KUBERNETES_"))}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        proc = subprocess.run([sys.executable, "-m", "kpod_otel", "run", "--once", "--config", str(cfg)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert TOKEN not in proc.stderr
        got = by_resource([r.request for r in receiver.wait_for(1)])
        exported = {k: v for k, v in got.items() if k != "kpod-otel"}
        expected = {p["metadata"]["uid"]: p for p in pods if p["metadata"]["namespace"] != "kube-system"}
        assert set(exported) == set(expected)
        for uid, p in expected.items():
            res = exported[uid]["resource"]
            assert res == {"k8s.pod.uid": uid, "k8s.pod.name": p["metadata"]["name"],
                           "k8s.namespace.name": "shop", "k8s.node.name": NODE}
            # container-level points carry the container's name and id as the API announced them
            faults = exported[uid]["kpod.mem.major.page.faults"].sum.data_points
            announced = {st["name"]: st["containerID"].split("://")[1] for st in p["status"]["containerStatuses"]}
            seen = {}
            for dp in faults:
                a = {kv.key: kv.value.string_value for kv in dp.attributes}
                seen[a["k8s.container.name"]] = a["container.id"]
            assert seen == announced
    finally:
        tree.cleanup()
        receiver.stop()
        api.down()
