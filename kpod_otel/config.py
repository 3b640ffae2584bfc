"""Agent configuration: the predecessor's YAML keys (its ConfigMaps keep working) plus optional new ones.

Precedence, lowest first: built-in defaults < YAML file < `KPOD_*` environment variables. `${VAR}` and
`${VAR:default}` are expanded in YAML string values before validation. The exporter itself is configured
only through the standard `OTEL_*` variables (see `kpod_otel.export.otlp_settings`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from kpod_otel.catalog import COLLECTORS


class ConfigError(ValueError):
    """Invalid configuration; the message is one line naming the key and what is allowed."""


class Profile(StrEnum):
    MINIMAL = "minimal"
    STANDARD = "standard"
    COMPREHENSIVE = "comprehensive"
    CUSTOM = "custom"


class DiscoveryMode(StrEnum):
    INFORMER = "informer"
    KUBELET = "kubelet"
    AUTO = "auto"
    LOCAL = "local"


# COLLECTORS: the collector names, as used by profiles and by `collectors.<name>.enabled` in the custom
# profile (declared with the metrics in the catalog: one vocabulary).

PROFILE_COLLECTORS: dict[Profile, frozenset[str]] = {
    Profile.MINIMAL: frozenset({"cpu", "disk"}),
    Profile.STANDARD: frozenset({"cpu", "tcp", "memory", "disk", "network", "filesystem"}),
    Profile.COMPREHENSIVE: frozenset(COLLECTORS),
}


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    mode: DiscoveryMode = DiscoveryMode.INFORMER
    kubelet_poll_interval: float = 30.0  # seconds
    node_ip: str = ""
    kubelet_port: int = 10250
    kubelet_ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    kubelet_insecure_skip_verify: bool = False
    kubelet_max_response_bytes: int = 32 * 1024 * 1024
    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    kubeconfig: str = ""  # empty: in-cluster service account
    api_fallback_after: float = 60.0  # seconds of API server failure before auto switches to kubelet
    resync_interval: float = 300.0  # seconds between full re-LISTs


@dataclass(frozen=True, slots=True)
class BpfConfig:
    enabled: bool = True
    program_dir: str = "/app/bpf"
    cgroup_skb: bool = True  # kill switch for the cgroup_skb programs (on the pods cgroup, or the v2 root)
    max_cgroups: int = 4096  # per-cgroup map capacity (110 pods x ~4 cgroups, with churn headroom)
    syscall_latency: bool = False  # latency histogram per syscall (expensive); forced on by comprehensive
    enable_stats: bool = False  # turn on the kernel's BPF run-time stats (node-wide) while the agent runs


@dataclass(frozen=True, slots=True)
class CgroupConfig:
    root: str = "/host/sys/fs/cgroup"
    proc_root: str = "/host/proc"
    sys_root: str = "/host/sys"  # for /sys/dev/block/<maj:min>/uevent
    kubelet_root: str = "/var/lib/kubelet"  # pods/<uid>/volumes live below it


@dataclass(frozen=True, slots=True)
class FilterConfig:
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ("kube-system", "kube-public")

    def allows(self, namespace: str) -> bool:
        if self.namespaces and namespace not in self.namespaces:
            return False
        return namespace not in self.exclude_namespaces


@dataclass(frozen=True, slots=True)
class HealthConfig:
    port: int = 8080  # 0 disables the /healthz and /readyz endpoints
    address: str = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class Config:
    profile: Profile = Profile.STANDARD
    poll_interval_ms: int | None = None  # None: OTEL_METRIC_EXPORT_INTERVAL, else 15000
    node_name: str = ""
    cluster_name: str = ""
    collectors: Mapping[str, bool] = field(default_factory=dict)  # custom profile switches
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    bpf: BpfConfig = field(default_factory=BpfConfig)
    cgroup: CgroupConfig = field(default_factory=CgroupConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    def enabled_collectors(self) -> frozenset[str]:
        if self.profile is Profile.CUSTOM:
            return frozenset(name for name, on in self.collectors.items() if on)
        return PROFILE_COLLECTORS[self.profile]

    @property
    def syscall_latency(self) -> bool:
        return self.bpf.syscall_latency or self.profile is Profile.COMPREHENSIVE


# --- schema -------------------------------------------------------------------------------------------
# key path (YAML spelling) -> (type, choices or None). The predecessor's keys plus the new optional ones.
_SCHEMA: dict[str, tuple[str, Any]] = {
    "profile": ("enum", [p.value for p in Profile]),
    "poll-interval": ("interval", None),
    "node-name": ("str", None),
    "cluster-name": ("str", None),
    "discovery.mode": ("enum", [m.value for m in DiscoveryMode]),
    "discovery.kubelet-poll-interval": ("seconds", None),
    "discovery.node-ip": ("str", None),
    "discovery.kubelet-port": ("port", None),
    "discovery.kubelet-ca-file": ("str", None),
    "discovery.kubelet-insecure-skip-verify": ("bool", None),
    "discovery.kubelet-max-response-bytes": ("posint", None),
    "discovery.token-file": ("str", None),
    "discovery.kubeconfig": ("str", None),
    "discovery.api-fallback-after": ("seconds", None),
    "discovery.resync-interval": ("seconds", None),
    "bpf.enabled": ("bool", None),
    "bpf.program-dir": ("str", None),
    "bpf.cgroup-skb": ("bool", None),
    "bpf.max-cgroups": ("posint", None),
    "bpf.syscall-latency": ("bool", None),
    "bpf.enable-stats": ("bool", None),
    "cgroup.root": ("str", None),
    "cgroup.proc-root": ("str", None),
    "cgroup.sys-root": ("str", None),
    "cgroup.kubelet-root": ("str", None),
    "filter.namespaces": ("strlist", None),
    "filter.excludeNamespaces": ("strlist", None),
    "health.port": ("port0", None),
    "health.address": ("str", None),
}
for _c in COLLECTORS:
    _SCHEMA[f"collectors.{_c}.enabled"] = ("bool", None)

_SECTIONS = {k.rsplit(".", 1)[0] for k in _SCHEMA if "." in k} | {
    k.rsplit(".", 2)[0] for k in _SCHEMA if k.count(".") == 2
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand `${VAR}` and `${VAR:default}`; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (use ${{{name}:default}} for a default)")

    return _VAR.sub(repl, text)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if path in _SCHEMA:
            flat[path] = value
        elif isinstance(value, Mapping) and path in _SECTIONS:
            flat.update(_flatten(value, path + "."))
        elif value is None and path in _SECTIONS:
            continue
        else:
            raise ConfigError(f"kpod.{path}: unknown key; allowed: {_allowed_under(prefix)}")
    return flat


def _allowed_under(prefix: str) -> str:
    names = sorted({k[len(prefix):].split(".", 1)[0] for k in _SCHEMA if k.startswith(prefix)})
    return ", ".join(names)


def _coerce(path: str, raw: Any) -> Any:
    kind, choices = _SCHEMA[path]
    where = f"kpod.{path}"
    if isinstance(raw, str):
        raw = raw.strip()
    if kind == "enum":
        if str(raw) not in choices:
            raise ConfigError(f"{where}: {raw!r} is not allowed; allowed: {' | '.join(choices)}")
        return str(raw)
    if kind == "str":
        if isinstance(raw, (dict, list)):
            raise ConfigError(f"{where}: expected a string")
        return "" if raw is None else str(raw)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1", "yes", "on"):
            return True
        if str(raw).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: {raw!r} is not a boolean; allowed: true | false")
    if kind == "strlist":
        if raw is None:
            return ()
        if isinstance(raw, str):  # from an environment variable: comma-separated
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            return tuple(raw)
        raise ConfigError(f"{where}: expected a list of namespace names")
    # numbers
    try:
        if isinstance(raw, bool):
            raise ValueError
        num = float(raw)
    except (TypeError, ValueError):
        num = float("nan")
    if kind == "interval":  # milliseconds, as the predecessor had it
        if not (1000 <= num <= 3_600_000) or num != int(num):
            raise ConfigError(f"{where}: {raw!r} is not allowed; allowed: whole milliseconds 1000..3600000")
        return int(num)
    if kind == "seconds":
        if not (0.1 <= num <= 86400):
            raise ConfigError(f"{where}: {raw!r} is not allowed; allowed: seconds 0.1..86400")
        return num
    if kind in ("port", "port0"):
        low = 0 if kind == "port0" else 1
        if not (low <= num <= 65535) or num != int(num):
            raise ConfigError(f"{where}: {raw!r} is not allowed; allowed: port {low}..65535")
        return int(num)
    if kind == "posint":
        if not (num >= 1) or num != int(num):
            raise ConfigError(f"{where}: {raw!r} is not allowed; allowed: a whole number >= 1")
        return int(num)
    raise AssertionError(kind)


def env_override_names() -> dict[str, str]:
    """`KPOD_*` variable name -> the key path it overrides."""
    by_env = {"KPOD_" + re.sub(r"[.\-]", "_", k).upper(): k for k in _SCHEMA}
    by_env["KPOD_FILTER_EXCLUDE_NAMESPACES"] = by_env.pop("KPOD_FILTER_EXCLUDENAMESPACES")
    return by_env


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """`KPOD_DISCOVERY_KUBELET_POLL_INTERVAL=10` -> {"discovery.kubelet-poll-interval": "10"}."""
    by_env = env_override_names()
    return {by_env[name]: value for name, value in env.items() if name in by_env}


def parse_config(text: str, env: Mapping[str, str] | None = None) -> Config:
    """Parse YAML text (the whole file, with its top-level `kpod:` key) into a Config."""
    env = os.environ if env is None else env
    try:
        doc = yaml.safe_load(expand_vars(text, env)) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping) or set(doc) - {"kpod"}:
        raise ConfigError("config: the top level must be a mapping with the single key 'kpod'")
    body = doc.get("kpod") or {}
    if not isinstance(body, Mapping):
        raise ConfigError("kpod: expected a mapping")
    flat = _flatten(body)
    flat.update(_env_overrides(env))
    values = {path: _coerce(path, raw) for path, raw in flat.items()}
    return _build(values)


def _build(v: Mapping[str, Any]) -> Config:
    def section(prefix: str) -> dict[str, Any]:
        return {
            k[len(prefix) + 1:].replace("-", "_"): val
            for k, val in v.items()
            if k.startswith(prefix + ".") and k.count(".") == 1
        }

    disc = section("discovery")
    if "mode" in disc:
        disc["mode"] = DiscoveryMode(disc["mode"])
    filt = section("filter")
    if "excludeNamespaces" in filt:
        filt["exclude_namespaces"] = filt.pop("excludeNamespaces")
    collectors = {c: bool(v[f"collectors.{c}.enabled"]) for c in COLLECTORS if f"collectors.{c}.enabled" in v}
    profile = Profile(v.get("profile", Profile.STANDARD.value))
    if profile is Profile.CUSTOM and not any(collectors.values()):
        raise ConfigError(
            "kpod.collectors: the custom profile needs at least one collectors.<name>.enabled: true; "
            f"allowed names: {', '.join(COLLECTORS)}"
        )
    return Config(
        profile=profile,
        poll_interval_ms=v.get("poll-interval"),
        node_name=v.get("node-name", ""),
        cluster_name=v.get("cluster-name", ""),
        collectors=collectors,
        discovery=DiscoveryConfig(**disc),
        bpf=BpfConfig(**section("bpf")),
        cgroup=CgroupConfig(**section("cgroup")),
        filter=FilterConfig(**filt),
        health=HealthConfig(**section("health")),
    )


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Load a config file (None: defaults plus environment overrides)."""
    if path is None:
        return parse_config("", env)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    return parse_config(text, env)


def config_keys() -> tuple[str, ...]:
    """Every key path the YAML accepts under `kpod:` (for docs and deployment checks)."""
    return tuple(_SCHEMA)
