"""deploy/: what `kubectl apply -k` would send, checked against the Kubernetes schemas and the agent's code.

The truth on the manifest side is kubectl's own kustomize build; on the agent side it is kpod_otel.config
(its schema, defaults and KPOD_* mapping), the OpenTelemetry SDK's list of OTEL_* variables, and a real
HealthServer answering the probes' paths.
"""

from __future__ import annotations

import http.client
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import opentelemetry.sdk.environment_variables as otel_env
import pytest
import yaml

import kpod_otel
from kpod_otel import config as agent_config
from kpod_otel.config import Config, DiscoveryMode
from kpod_otel.health import HealthServer, HealthState
from tests.deploy.deploy_manifests import (
    BASE,
    COLLECTOR_CONFIG,
    KUBELET_COMPONENT,
    OVERLAY,
    Obj,
    agent_container,
    all_of,
    arg_after,
    compose_with_component,
    configmap_for_volume,
    env_for_config,
    kustomize,
    one,
    quantity,
)

# Oldest and newest Kubernetes minors still commonly run, plus one between (schemas ship offline
# with kubernetes-validate).
K8S_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")
NAMESPACE = "kpod-otel"
NODE_NAME, NODE_IP = "node-a.example", "192.0.2.10"

# Kernel interfaces read by bcc/libbcc rather than by kpod-otel's own code, so they have no config key.
KERNEL_PATHS = {
    "/sys/kernel/tracing": "tracefs: tracepoint ids and format files (bcc.TRACEFS)",
    "/sys/kernel/btf": "BTF of the running kernel",
    "/lib/modules": "kernel headers: /lib/modules/$(uname -r)/build",
    "/usr/src": "targets of the build/source links on most distributions",
    "/tmp": "libbcc extracts /sys/kernel/kheaders.tar.xz to /tmp/kheaders-<release>",
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    composed = compose_with_component(tmp_path_factory.mktemp("kpt-deploy-kz"), BASE, KUBELET_COMPONENT)
    return {"base": kustomize(BASE), "overlay": kustomize(OVERLAY), "base+kubelet": kustomize(composed)}


def effective_config(objs: list[Obj]) -> tuple[Config, str]:
    """The agent's Config as it starts in the DaemonSet: mounted ConfigMap + the container's env."""
    ds = one(objs, "DaemonSet", "kpod-otel")
    pod = ds["spec"]["template"]["spec"]
    c = agent_container(objs)
    config_file = arg_after(c["args"], "--config")
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == posixpath.dirname(config_file))
    cm = configmap_for_volume(objs, pod, mount["name"])
    text = cm["data"][posixpath.basename(config_file)]
    return agent_config.parse_config(text, env_for_config(c, NODE_NAME, NODE_IP)), text


def poll_interval_s(cfg: Config, env: dict[str, str]) -> float:
    """The cycle length: kpod.poll-interval if set, else OTEL_METRIC_EXPORT_INTERVAL (ms), else 15 s."""
    if cfg.poll_interval_ms is not None:
        return cfg.poll_interval_ms / 1000
    return int(env.get("OTEL_METRIC_EXPORT_INTERVAL", "15000")) / 1000


# --- kustomize + schemas --------------------------------------------------------------------------


def test_builds_contain_the_expected_objects(builds: dict[str, list[Obj]]) -> None:
    kinds = {name: sorted((o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap"
                           else o["metadata"]["name"]) for o in objs) for name, objs in builds.items()}
    assert kinds["base"] == sorted([
        ("Namespace", "kpod-otel"), ("ServiceAccount", "kpod-otel"), ("ClusterRole", "kpod-otel"),
        ("ClusterRoleBinding", "kpod-otel"), ("ConfigMap", "kpod-otel-config"), ("DaemonSet", "kpod-otel"),
    ])
    assert set(kinds["overlay"]) - set(kinds["base"]) == {
        ("ServiceAccount", "otel-collector"), ("ConfigMap", "otel-collector-config"),
        ("Deployment", "otel-collector"), ("Service", "otel-collector"),
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("build", ["base", "overlay", "base+kubelet"])
def test_every_object_validates(builds: dict[str, list[Obj]], build: str, version: str) -> None:
    for obj in builds[build]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {exc}")


def test_validator_rejects_a_broken_daemonset(builds: dict[str, list[Obj]]) -> None:
    """The schema check above can fail: a misspelt field is caught in strict mode."""
    ds = yaml.safe_load(yaml.safe_dump(one(builds["base"], "DaemonSet")))
    ds["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("build", ["base", "overlay", "base+kubelet"])
def test_namespaced_objects_live_in_the_namespace(builds: dict[str, list[Obj]], build: str) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in builds[build]:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


# --- config and environment -------------------------------------------------------------------------


@pytest.mark.parametrize("build", ["base", "overlay", "base+kubelet"])
def test_configmap_loads_with_the_agents_loader(builds: dict[str, list[Obj]], build: str) -> None:
    cfg, _ = effective_config(builds[build])
    assert cfg.node_name == NODE_NAME
    assert cfg.discovery.node_ip == NODE_IP
    env = env_for_config(agent_container(builds[build]), NODE_NAME, NODE_IP)
    assert poll_interval_s(cfg, env) == 15.0
    # The host-root layout the DaemonSet's mounts provide (and config.py's defaults expect).
    assert (cfg.cgroup.root, cfg.cgroup.proc_root, cfg.cgroup.sys_root, cfg.cgroup.kubelet_root) == (
        agent_config.CgroupConfig().root, agent_config.CgroupConfig().proc_root,
        agent_config.CgroupConfig().sys_root, agent_config.CgroupConfig().kubelet_root,
    )
    assert cfg.bpf.program_dir == agent_config.BpfConfig().program_dir


def test_image_default_config_is_the_configmap() -> None:
    """install.sh installs deploy/base/kpod-otel.yaml as /etc/kpod-otel/config.yaml; so does kustomize."""
    install = (BASE.parent / "image" / "install.sh").read_text()
    assert '"$SRC/deploy/base/kpod-otel.yaml" /etc/kpod-otel/config.yaml' in install
    kz = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    gen = next(g for g in kz["configMapGenerator"] if g["name"] == "kpod-otel-config")
    assert gen["files"] == ["config.yaml=kpod-otel.yaml"]


def kpod_env_name_is_read(name: str) -> bool:
    return bool(agent_config._env_overrides({name: "x"}))


OTEL_NAMES = frozenset(n for n in dir(otel_env) if n.startswith("OTEL_"))


@pytest.mark.parametrize("build", ["base", "overlay", "base+kubelet"])
def test_every_env_var_is_read_by_the_agent(builds: dict[str, list[Obj]], build: str) -> None:
    _, text = effective_config(builds[build])
    referenced = {m.group(1) for m in agent_config._VAR.finditer(text)}
    unread = []
    for item in agent_container(builds[build]).get("env", []):
        name = item["name"]
        if name.startswith("KPOD_"):
            ok = kpod_env_name_is_read(name)
        elif name.startswith("OTEL_"):
            ok = name in OTEL_NAMES
        else:
            ok = name in referenced
        if not ok:
            unread.append(name)
    assert unread == [], f"env vars nothing reads: {unread}"


def test_read_set_is_not_vacuous() -> None:
    assert kpod_env_name_is_read("KPOD_PROFILE")
    assert kpod_env_name_is_read("KPOD_DISCOVERY_KUBELET_POLL_INTERVAL")
    assert not kpod_env_name_is_read("KPOD_PROFIL")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in OTEL_NAMES
    assert "OTEL_EXPORTER_OTLP_ENDPOINTS" not in OTEL_NAMES


@pytest.mark.parametrize("build", ["base", "overlay"])
def test_every_config_variable_is_set_by_the_daemonset(builds: dict[str, list[Obj]], build: str) -> None:
    _, text = effective_config(builds[build])
    needed = {m.group(1) for m in agent_config._VAR.finditer(text) if m.group(2) is None}
    given = {e["name"] for e in agent_container(builds[build])["env"]}
    assert needed and needed <= given


def test_downward_api_sources() -> None:
    c = agent_container(kustomize(BASE))
    refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"NODE_NAME": "spec.nodeName", "NODE_IP": "status.hostIP"}


# --- mounts -------------------------------------------------------------------------------------------


def agent_paths(cfg: Config, config_file: str) -> dict[str, str]:
    """Paths kpod-otel itself reads in the container, from its effective configuration."""
    return {
        cfg.cgroup.root: "cgroup.root",
        cfg.cgroup.proc_root: "cgroup.proc-root",
        cfg.cgroup.sys_root: "cgroup.sys-root",
        posixpath.join(cfg.cgroup.kubelet_root, "pods"): "cgroup.kubelet-root (pods/<uid>/volumes)",
        posixpath.dirname(config_file): "--config",
    }


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@pytest.mark.parametrize("build", ["base", "overlay"])
def test_every_mount_is_read_and_every_read_path_is_mounted(builds: dict[str, list[Obj]], build: str) -> None:
    objs = builds[build]
    cfg, _ = effective_config(objs)
    c = agent_container(objs)
    wanted = agent_paths(cfg, arg_after(c["args"], "--config")) | KERNEL_PATHS
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert set(mounts) == set(wanted), (
        f"mounted but not read: {sorted(set(mounts) - set(wanted))}; "
        f"read but not mounted: {sorted(set(wanted) - set(mounts))}"
    )
    # The BPF programs come with the image: nothing may be mounted over them.
    assert not any(under(cfg.bpf.program_dir, m) for m in mounts)


def test_host_paths_map_to_the_same_host_location() -> None:
    objs = kustomize(BASE)
    pod = one(objs, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in agent_container(objs)["volumeMounts"]:
        vol = volumes[m["name"]]
        if "hostPath" not in vol:
            continue
        host = vol["hostPath"]["path"]
        path = m["mountPath"]
        expected = path.removeprefix("/host") if path.startswith("/host/") else path
        assert host == expected, f"{m['mountPath']} shows host {host}"
        assert m.get("readOnly") is True, f"host path {host} must be read-only"


def test_service_account_token_is_mounted_for_discovery() -> None:
    cfg = agent_config.parse_config("", env={})
    assert cfg.discovery.token_file.startswith("/var/run/secrets/kubernetes.io/serviceaccount/")
    pod = one(kustomize(BASE), "DaemonSet")["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken", True) is True
    assert pod["serviceAccountName"] == "kpod-otel"


# --- pod spec requirements ------------------------------------------------------------------------------


def daemonset_source_lines() -> list[str]:
    return (BASE / "daemonset.yaml").read_text().splitlines()


def test_security_context() -> None:
    objs = kustomize(BASE)
    pod = one(objs, "DaemonSet")["spec"]["template"]["spec"]
    sc = agent_container(objs)["securityContext"]
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork", False)
    assert sc.get("privileged", False) is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = sc["capabilities"]["add"]
    assert added, "the agent needs capabilities"
    # Each added capability carries a comment saying why (in the source, next to it).
    lines = daemonset_source_lines()
    for cap in added:
        line = next(ln for ln in lines if ln.strip().split("#", 1)[0].strip() == f"- {cap}")
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, f"{cap} has no justification"
    assert "SYS_MODULE" not in added and "ALL" not in added


def test_probes_point_at_the_health_server(builds: dict[str, list[Obj]]) -> None:
    cfg, _ = effective_config(builds["base"])
    c = agent_container(builds["base"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == cfg.health.port


def probe_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_probe_paths_answer_on_a_real_health_server(builds: dict[str, list[Obj]]) -> None:
    cfg, _ = effective_config(builds["base"])
    c = agent_container(builds["base"])
    live, ready = c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"]
    env = env_for_config(c, NODE_NAME, NODE_IP)
    state = HealthState(poll_interval_s(cfg, env))
    server = HealthServer(state, "127.0.0.1", 0)  # the configured port may be taken on a test machine
    server.start()
    try:
        assert probe_get(server.port, live) == 200  # starting up: not yet stale
        assert probe_get(server.port, ready) == 503  # no cycle yet: kept out of rotation
        state.cycle_finished()
        assert probe_get(server.port, live) == 200
        assert probe_get(server.port, ready) == 200
    finally:
        server.stop()


def test_grace_period_outlasts_a_cycle_and_the_final_export(builds: dict[str, list[Obj]]) -> None:
    cfg, _ = effective_config(builds["base"])
    env = env_for_config(agent_container(builds["base"]), NODE_NAME, NODE_IP)
    export_timeout_s = int(env.get("OTEL_METRIC_EXPORT_TIMEOUT", "30000")) / 1000  # SDK default 30 s
    grace = one(builds["base"], "DaemonSet")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > export_timeout_s + poll_interval_s(cfg, env)


def test_resources_and_tolerations() -> None:
    objs = kustomize(BASE)
    res = agent_container(objs)["resources"]
    for key in ("cpu", "memory"):
        assert quantity(res["requests"][key]) <= quantity(res["limits"][key])
    # Room for the measured start-up peak (bcc compile with kernel headers, ~230 MB; shared/DESIGN.md).
    assert quantity(res["limits"]["memory"]) >= 2 * 230 * 2**20
    tolerations = one(objs, "DaemonSet")["spec"]["template"]["spec"]["tolerations"]
    assert {"operator": "Exists"} in tolerations  # every taint, every effect


def test_image_tag_is_the_package_version(builds: dict[str, list[Obj]]) -> None:
    for build in ("base", "overlay"):
        image = agent_container(builds[build])["image"]
        assert image.rsplit(":", 1)[1] == kpod_otel.__version__


# --- RBAC ---------------------------------------------------------------------------------------------------


def granted_rules(objs: list[Obj], sa: str) -> set[tuple[str, str, str]]:
    roles = {r["metadata"]["name"]: r for r in all_of(objs, "ClusterRole")}
    rules: set[tuple[str, str, str]] = set()
    for b in all_of(objs, "ClusterRoleBinding"):
        if any(s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == NAMESPACE
               for s in b["subjects"]):
            for rule in roles[b["roleRef"]["name"]]["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        rules |= {(group, resource, verb) for verb in rule["verbs"]}
    assert not all_of(objs, "Role") and not all_of(objs, "RoleBinding")
    return rules


@pytest.mark.parametrize("build", ["base", "overlay", "base+kubelet"])
def test_rbac_is_exactly_what_the_discovery_mode_calls(builds: dict[str, list[Obj]], build: str) -> None:
    cfg, _ = effective_config(builds[build])
    # informer.py calls list_pod_for_all_namespaces (LIST, and WATCH with watch=true); never a single GET
    expected = {("", "pods", "list"), ("", "pods", "watch")}
    if cfg.discovery.mode in (DiscoveryMode.KUBELET, DiscoveryMode.AUTO):
        expected.add(("", "nodes/proxy", "get"))  # the kubelet authorizes GET /pods as get nodes/proxy
    assert granted_rules(builds[build], "kpod-otel") == expected


def test_kubelet_component_switches_mode(builds: dict[str, list[Obj]]) -> None:
    assert effective_config(builds["base"])[0].discovery.mode is DiscoveryMode.INFORMER
    assert effective_config(builds["base+kubelet"])[0].discovery.mode is DiscoveryMode.AUTO


# --- agent -> collector --------------------------------------------------------------------------------


def collector_config() -> Any:
    return yaml.safe_load(COLLECTOR_CONFIG.read_text())


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_agent_endpoint_reaches_the_collectors_otlp_grpc_receiver(builds: dict[str, list[Obj]]) -> None:
    objs = builds["overlay"]
    env = env_for_config(agent_container(objs), NODE_NAME, NODE_IP)
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    url = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert url.scheme == "http"  # in-cluster plain gRPC; the exporter treats http:// as insecure
    svc_name, svc_ns, *rest = (url.hostname or "").split(".")
    assert rest in (["svc"], ["svc", "cluster", "local"])
    svc = one(objs, "Service", svc_name)
    assert svc["metadata"]["namespace"] == svc_ns
    sport = next(p for p in svc["spec"]["ports"] if p["port"] == url.port)
    dep = one(objs, "Deployment", svc_name)
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    cport = next(p["containerPort"] for p in container["ports"] if p["name"] == sport["targetPort"])
    grpc = collector_config()["receivers"]["otlp"]["protocols"]["grpc"]
    assert port_of(grpc["endpoint"]) == cport == url.port == 4317


def test_collector_ports_match_its_config(builds: dict[str, list[Obj]]) -> None:
    objs = builds["overlay"]
    cfg = collector_config()
    dep = one(objs, "Deployment", "otel-collector")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["otlp-http"] == port_of(cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"]) == 4318
    assert ports["prometheus"] == port_of(cfg["exporters"]["prometheus"]["endpoint"])
    assert ports["health"] == port_of(cfg["extensions"]["health_check"]["endpoint"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "health"
    svc_ports = {p["name"]: p for p in one(objs, "Service", "otel-collector")["spec"]["ports"]}
    assert {p["targetPort"] for p in svc_ports.values()} <= set(ports)


def test_collector_mounts_the_config_file_from_the_generated_configmap(builds: dict[str, list[Obj]]) -> None:
    objs = builds["overlay"]
    dep = one(objs, "Deployment", "otel-collector")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    config_path = arg_after(c["args"], "--config")
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == posixpath.dirname(config_path))
    cm = configmap_for_volume(objs, pod, mount["name"])
    assert re.fullmatch(r"otel-collector-config-[a-z0-9]{10}", cm["metadata"]["name"])  # content-hashed
    assert cm["data"][posixpath.basename(config_path)] == COLLECTOR_CONFIG.read_text()


def test_top_level_collector_config_is_the_overlays_file() -> None:
    assert COLLECTOR_CONFIG.is_symlink()
    assert COLLECTOR_CONFIG.resolve() == (OVERLAY / "otel-collector-config.yaml").resolve()
    assert Path(COLLECTOR_CONFIG).read_text().strip()
