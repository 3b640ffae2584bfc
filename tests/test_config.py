"""Configuration: the predecessor's keys, variable expansion, KPOD_* overrides, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kpod_otel.config import ConfigError, DiscoveryMode, Profile, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
PREDECESSOR = REPO / "examples" / "predecessor.yaml"


def test_predecessor_configmap_loads() -> None:
    cfg = load_config(PREDECESSOR, {"NODE_NAME": "worker-7"})
    assert cfg.profile is Profile.STANDARD
    assert cfg.poll_interval_ms == 15000
    assert cfg.node_name == "worker-7"
    assert cfg.discovery.mode is DiscoveryMode.INFORMER
    assert cfg.discovery.kubelet_poll_interval == 30
    assert cfg.discovery.node_ip == ""  # ${NODE_IP:} has an empty default
    assert cfg.bpf.enabled and cfg.bpf.program_dir == "/app/bpf"
    assert cfg.cgroup.root == "/host/sys/fs/cgroup" and cfg.cgroup.proc_root == "/host/proc"
    assert cfg.filter.namespaces == () and cfg.filter.exclude_namespaces == ("kube-system", "kube-public")
    assert cfg.enabled_collectors() == {"cpu", "tcp", "memory", "disk", "network", "filesystem"}


def test_variable_expansion_with_and_without_default() -> None:
    text = "kpod:\n  node-name: ${N}\n  discovery:\n    node-ip: ${IP:10.9.8.7}\n"
    assert parse_config(text, {"N": "a"}).discovery.node_ip == "10.9.8.7"
    assert parse_config(text, {"N": "a", "IP": "192.0.2.1"}).discovery.node_ip == "192.0.2.1"
    with pytest.raises(ConfigError, match="N is not set"):
        parse_config(text, {})


def test_kpod_environment_overrides_yaml() -> None:
    env = {"NODE_NAME": "n", "KPOD_PROFILE": "minimal", "KPOD_DISCOVERY_KUBELET_POLL_INTERVAL": "5",
           "KPOD_FILTER_EXCLUDE_NAMESPACES": "a, b", "KPOD_BPF_ENABLED": "false", "KPOD_POLL_INTERVAL": "2000"}
    cfg = load_config(PREDECESSOR, env)
    assert cfg.profile is Profile.MINIMAL and cfg.enabled_collectors() == {"cpu", "disk"}
    assert cfg.discovery.kubelet_poll_interval == 5.0
    assert cfg.filter.exclude_namespaces == ("a", "b")
    assert cfg.bpf.enabled is False
    assert cfg.poll_interval_ms == 2000


def test_profiles() -> None:
    assert parse_config("kpod:\n  profile: comprehensive\n", {}).enabled_collectors() == {
        "cpu", "tcp", "memory", "syscall", "disk", "network", "filesystem"}
    assert parse_config("kpod:\n  profile: comprehensive\n", {}).syscall_latency
    custom = parse_config(
        "kpod:\n  profile: custom\n  collectors:\n    disk: {enabled: true}\n    tcp: {enabled: false}\n", {})
    assert custom.enabled_collectors() == {"disk"}


def test_filter_semantics() -> None:
    f = parse_config("kpod:\n  filter:\n    namespaces: [a, b]\n    excludeNamespaces: [b]\n", {}).filter
    assert f.allows("a") and not f.allows("b") and not f.allows("c")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kpod:\n  profil: standard\n", "kpod.profil: unknown key; allowed: "),
        ("kpod:\n  profile: turbo\n", "kpod.profile: 'turbo' is not allowed; allowed: minimal | standard | "
                                      "comprehensive | custom"),
        ("kpod:\n  poll-interval: 10\n", "kpod.poll-interval: 10 is not allowed; allowed: whole milliseconds"),
        ("kpod:\n  poll-interval: soon\n", "kpod.poll-interval: 'soon' is not allowed"),
        ("kpod:\n  discovery:\n    mode: magic\n", "kpod.discovery.mode: 'magic' is not allowed; allowed: "
                                                    "informer | kubelet | auto | local"),
        ("kpod:\n  discovery:\n    colour: red\n", "kpod.discovery.colour: unknown key; allowed: api-fallback-after"),
        ("kpod:\n  bpf:\n    enabled: maybe\n", "kpod.bpf.enabled: 'maybe' is not a boolean"),
        ("kpod:\n  profile: custom\n", "kpod.collectors: the custom profile needs"),
        ("other: 1\n", "top level must be a mapping with the single key 'kpod'"),
        ("kpod: [\n", "not valid YAML"),
    ],
)
def test_invalid_config_messages(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, {})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kpod:\n  profile: turbo\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KPOD_", "OTEL_"))}
    proc = subprocess.run([sys.executable, "-m", "kpod_otel", "run", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "kpod.profile" in lines[0] and "minimal | standard | comprehensive | custom" in lines[0]


def test_cli_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "kpod_otel", "--version"], capture_output=True, text=True,
                          timeout=60)
    from kpod_otel import __version__

    assert proc.returncode == 0 and proc.stdout.strip() == f"kpod-otel {__version__}"


def test_every_key_is_documented() -> None:
    from kpod_otel.config import COLLECTORS, config_keys

    doc = (REPO / "docs" / "configuration.md").read_text()
    for key in config_keys():
        if key.startswith("collectors."):
            continue
        assert f"`{key}`" in doc, key
    assert "`collectors.<name>.enabled`" in doc and all(f"`{c}`" in doc for c in COLLECTORS)


class _RecordingEnv(dict[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_every_otel_variable_the_agent_reads_is_documented() -> None:
    import re

    from kpod_otel.export.otlp_settings import settings_from_env
    from kpod_otel.export.selection import exporters_from_env
    from kpod_otel.export.temporality import preference_from_env

    # the names written out in the source, and those the settings parsers compose (METRICS_ + generic)
    read = {name for path in (REPO / "kpod_otel").rglob("*.py")
            for name in re.findall(r"\bOTEL_[A-Z_]*[A-Z]\b", path.read_text())}
    env = _RecordingEnv()
    settings_from_env(env)
    exporters_from_env(env)
    preference_from_env(env)
    read |= env.asked
    read -= {"OTEL_EXPORTER_OTLP", "OTEL_EXPORTER_OTLP_METRICS"}  # prefixes of composed names
    assert len(env.asked) >= 18
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert sorted(name for name in read if f"`{name}`" not in doc) == []
