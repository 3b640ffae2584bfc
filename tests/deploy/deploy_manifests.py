"""Helpers for the deploy tests: build kustomizations with the real kubectl and pick objects out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "with-collector"
KUBELET_COMPONENT = DEPLOY / "components" / "kubelet-discovery"
COLLECTOR_CONFIG = REPO / "otel-collector-config.yaml"

Obj = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError("kubectl is not installed (it carries kustomize; see docs/deploy.md)")
    return path


def kustomize(directory: Path) -> list[Obj]:
    """`kubectl kustomize DIR`, parsed: the objects exactly as `kubectl apply -k DIR` would send them."""
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def agent_container(objs: list[Obj]) -> Obj:
    ds = one(objs, "DaemonSet", "kpod-otel")
    containers = ds["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def configmap_for_volume(objs: list[Obj], pod_spec: Obj, volume_name: str) -> Obj:
    """The ConfigMap a pod volume refers to (by its generated, hash-suffixed name)."""
    vol = next(v for v in pod_spec["volumes"] if v["name"] == volume_name)
    return one(objs, "ConfigMap", vol["configMap"]["name"])


def env_for_config(container: Obj, node_name: str, node_ip: str) -> dict[str, str]:
    """The environment the container gets, with downward-API values filled in as the kubelet would."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        field = item["valueFrom"]["fieldRef"]["fieldPath"]
        env[item["name"]] = {"spec.nodeName": node_name, "status.hostIP": node_ip}[field]
    return env


def arg_after(args: list[str], flag: str) -> str:
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def compose_with_component(tmp: Path, base: Path, component: Path) -> Path:
    """A throw-away kustomization: `base` plus a component, as a user's overlay would have it."""
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(base, tmp)],
                "components": [os.path.relpath(component, tmp)],
            }
        )
    )
    return tmp



def quantity(q: str | int) -> float:
    """A Kubernetes resource quantity (the forms used here) as a number: cores or bytes."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    m = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", str(q))
    assert m, q
    return float(m.group(1)) * units[m.group(2)]
