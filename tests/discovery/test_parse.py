"""The pure Pod JSON parser, on real v1 Pod objects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kpod_otel.discovery.parse import (
    PodParseError,
    parse_pod,
    parse_pod_list,
    parse_pods,
    split_container_id,
)
from kpod_otel.model import ContainerKind
from tests.fakes.k8s import make_pod, status_container_ids

# A pod as `kubectl get pod -o json` shows it on a CRI-O node (trimmed of managedFields), written out
# literally so the parser is checked against text not produced by our own fake.
CRIO_POD = json.loads("""
{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {
    "creationTimestamp": "2026-11-20T08:12:44Z",
    "generateName": "ingress-7c9f8d6b5-",
    "labels": {"app": "ingress", "pod-template-hash": "7c9f8d6b5"},
    "name": "ingress-7c9f8d6b5-q2xlm",
    "namespace": "edge",
    "ownerReferences": [{"apiVersion": "apps/v1", "blockOwnerDeletion": true, "controller": true,
                         "kind": "ReplicaSet", "name": "ingress-7c9f8d6b5",
                         "uid": "0e4b9a55-7d43-4f2b-9c1e-2b6f0c1d9a10"}],
    "resourceVersion": "48213377",
    "uid": "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
  },
  "spec": {
    "containers": [
      {"image": "registry.example/ingress:2.1", "imagePullPolicy": "IfNotPresent", "name": "controller",
       "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "1", "memory": "512Mi"}},
       "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
      {"image": "registry.example/exporter:0.9", "imagePullPolicy": "IfNotPresent", "name": "metrics",
       "resources": {"limits": {"cpu": "100m", "memory": "64Mi"},
                     "requests": {"cpu": "100m", "memory": "64Mi"}},
       "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
    ],
    "initContainers": [
      {"image": "registry.example/sysctl:1", "name": "tune", "resources": {},
       "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
    ],
    "dnsPolicy": "ClusterFirstWithHostNet",
    "enableServiceLinks": true,
    "hostNetwork": true,
    "nodeName": "worker-17",
    "priority": 0,
    "restartPolicy": "Always",
    "schedulerName": "default-scheduler",
    "serviceAccountName": "ingress",
    "terminationGracePeriodSeconds": 30
  },
  "status": {
    "conditions": [{"lastProbeTime": null, "lastTransitionTime": "2026-11-20T08:12:50Z", "status": "True",
                    "type": "Ready"}],
    "containerStatuses": [
      {"containerID": "cri-o://9b1e2c3d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c", "image":
       "registry.example/ingress:2.1", "imageID": "registry.example/ingress@sha256:aa", "lastState":
       {"terminated": {"containerID": "cri-o://1111", "exitCode": 137, "finishedAt": "2026-11-21T01:00:00Z",
       "reason": "OOMKilled", "startedAt": "2026-11-20T08:12:49Z"}}, "name": "controller", "ready": true,
       "restartCount": 2, "started": true, "state": {"running": {"startedAt": "2026-11-21T01:00:01Z"}}},
      {"containerID": "cri-o://2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d", "image":
       "registry.example/exporter:0.9", "imageID": "registry.example/exporter@sha256:bb", "lastState": {},
       "name": "metrics", "ready": true, "restartCount": 0, "started": true,
       "state": {"running": {"startedAt": "2026-11-20T08:12:50Z"}}}
    ],
    "hostIP": "192.0.2.17",
    "initContainerStatuses": [
      {"containerID": "cri-o://3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e", "image":
       "registry.example/sysctl:1", "imageID": "registry.example/sysctl@sha256:cc", "lastState": {},
       "name": "tune", "ready": true, "restartCount": 0, "started": false,
       "state": {"terminated": {"containerID": "cri-o://3d4e", "exitCode": 0, "reason": "Completed",
       "finishedAt": "2026-11-20T08:12:48Z", "startedAt": "2026-11-20T08:12:47Z"}}}
    ],
    "phase": "Running",
    "podIP": "192.0.2.17",
    "qosClass": "Guaranteed",
    "startTime": "2026-11-20T08:12:44Z"
  }
}
""")


def test_literal_crio_pod() -> None:
    pod = parse_pod(CRIO_POD)
    assert (pod.uid, pod.name, pod.namespace) == (
        "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "ingress-7c9f8d6b5-q2xlm", "edge")
    assert (pod.node_name, pod.qos_class, pod.phase, pod.host_network) == (
        "worker-17", "Guaranteed", "Running", True)
    assert pod.labels == {"app": "ingress", "pod-template-hash": "7c9f8d6b5"}
    assert [(c.name, c.kind, c.runtime, c.restart_count) for c in pod.containers] == [
        ("tune", ContainerKind.INIT, "cri-o", 0),
        ("controller", ContainerKind.APP, "cri-o", 2),
        ("metrics", ContainerKind.APP, "cri-o", 0),
    ]
    assert pod.containers[1].container_id == (
        "9b1e2c3d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c")


def test_init_and_ephemeral_containers_from_their_status_lists() -> None:
    obj = make_pod("dbg", "ops", containers=("app", "sidecar"), init_containers=("migrate",),
                   ephemeral_containers=("debugger",), qos="Burstable", restarts=3)
    pod = parse_pod(obj)
    kinds = {c.name: c.kind for c in pod.containers}
    assert kinds == {"migrate": ContainerKind.INIT, "app": ContainerKind.APP, "sidecar": ContainerKind.APP,
                     "debugger": ContainerKind.EPHEMERAL}
    announced = status_container_ids(obj)
    for c in pod.containers:
        assert f"containerd://{c.container_id}" == announced[c.name]
        assert len(c.container_id) == 64 and c.runtime == "containerd"
    assert {c.name: c.restart_count for c in pod.containers}["app"] == 3
    assert pod.qos_class == "Burstable" and pod.host_network is False


@pytest.mark.parametrize(("raw", "expected"), [
    ("containerd://" + "a" * 64, ("a" * 64, "containerd")),
    ("cri-o://" + "b" * 64, ("b" * 64, "cri-o")),
    ("docker://" + "c" * 64, ("c" * 64, "docker")),
    ("rkt://d", ("d", "")),
    ("", ("", "")),
])
def test_split_container_id(raw: str, expected: tuple[str, str]) -> None:
    assert split_container_id(raw) == expected


def test_pending_pod_without_statuses() -> None:
    obj = make_pod("pending", "shop", phase="Pending", containers=("app",))
    del obj["status"]["containerStatuses"]
    del obj["status"]["qosClass"]
    pod = parse_pod(obj)
    assert pod.phase == "Pending" and pod.qos_class == ""
    assert [(c.name, c.container_id, c.runtime) for c in pod.containers] == [("app", "", "")]


def _broken(mutate: Any) -> dict[str, Any]:
    obj = make_pod("x", "shop")
    mutate(obj)
    return obj


@pytest.mark.parametrize("obj", [
    None,
    [],
    {"spec": {}},
    _broken(lambda o: o["metadata"].pop("uid")),
    _broken(lambda o: o["metadata"].__setitem__("uid", "")),
    _broken(lambda o: o["metadata"].__setitem__("labels", {"a": 1})),
    _broken(lambda o: o["spec"].__setitem__("hostNetwork", "yes")),
    _broken(lambda o: o["spec"].__setitem__("containers", {"name": "app"})),
    _broken(lambda o: o["spec"]["containers"][0].pop("name")),
    _broken(lambda o: o["status"]["containerStatuses"][0].__setitem__("restartCount", -1)),
    _broken(lambda o: o["status"]["containerStatuses"][0].__setitem__("containerID", 7)),
    _broken(lambda o: o["status"].__setitem__("phase", ["Running"])),
    _broken(lambda o: o.__setitem__("status", "Running")),
])
def test_malformed_pods_raise_typed_error(obj: Any) -> None:
    with pytest.raises(PodParseError):
        parse_pod(obj)


def test_parse_error_names_the_pod() -> None:
    obj = _broken(lambda o: o["status"]["containerStatuses"][0].__setitem__("restartCount", "x"))
    with pytest.raises(PodParseError) as info:
        parse_pod(obj)
    assert info.value.pod == "shop/x" and "restartCount" in str(info.value)


def test_pod_list_keeps_good_items() -> None:
    good = [make_pod(f"p{i}", "shop") for i in range(3)]
    bad = copy.deepcopy(good[0])
    bad["metadata"]["name"] = None
    plist = parse_pod_list({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "812"},
                            "items": [good[0], bad, good[1], good[2]]})
    assert plist.resource_version == "812"
    pods, errors = parse_pods(plist.items)
    assert [p.name for p in pods] == ["p0", "p1", "p2"]
    assert len(errors) == 1


@pytest.mark.parametrize("obj", [
    {"kind": "Status", "code": 403},
    {"kind": "PodList", "items": {"a": 1}},
    {"kind": "PodList", "metadata": {"resourceVersion": 5}, "items": []},
    "PodList",
])
def test_malformed_pod_list(obj: Any) -> None:
    with pytest.raises(PodParseError):
        parse_pod_list(obj)


def test_static_pod_mirror_carries_the_kubelet_uid() -> None:
    # A static pod as the API server shows its mirror: a uid of its own, the kubelet's in the annotations.
    config_hash = "0d5a3f7b9c2e4d6f8a1b3c5d7e9f0a2b"
    mirror = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "etcd-worker-1", "namespace": "kube-system", "uid": "3b9f6d2e-0000-4000-8000-1a2b3c4d5e6f",
                     "annotations": {"kubernetes.io/config.hash": config_hash,
                                     "kubernetes.io/config.mirror": config_hash,
                                     "kubernetes.io/config.source": "file"}},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "etcd", "image": "registry.k8s.io/etcd:3.5.9"}]},
        "status": {"phase": "Running", "qosClass": "Burstable"},
    }
    pod = parse_pod(mirror)
    assert pod.uid == "3b9f6d2e-0000-4000-8000-1a2b3c4d5e6f"
    assert pod.kubelet_uid == config_hash and pod.node_uid == config_hash
    # as the kubelet itself lists it: the uid is the hash already
    mirror["metadata"]["uid"] = config_hash
    assert parse_pod(mirror).kubelet_uid == "" and parse_pod(mirror).node_uid == config_hash
