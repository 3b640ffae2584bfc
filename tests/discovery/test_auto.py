"""Auto mode and the factory: informer -> kubelet -> local and back, with the mode self-metrics."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kpod_otel.config import Config, ConfigError, DiscoveryConfig, DiscoveryMode
from kpod_otel.discovery.auto import AutoProvider
from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.factory import build_provider
from kpod_otel.discovery.informer import InformerProvider
from kpod_otel.discovery.kubelet import KubeletProvider
from kpod_otel.model import PodInfo
from kpod_otel.selfmetrics import AgentStats
from tests.discovery.helpers import wait_until
from tests.fakes.k8s import NODE, FakeCluster, FakeServer, make_pod, uid_of
from tests.fakes.tls import TestCA

POLL = 0.3
FALLBACK = 0.5


class CgroupWorkloads(PodProvider):
    """Stands in for the local cgroup provider the agent injects (another area's code)."""

    mode = "local"

    def __init__(self) -> None:
        self.started = self.stopped = 0

    def start(self) -> None:
        self.started += 1

    def pods(self) -> list[PodInfo]:
        return [PodInfo(uid="cgroup:system.slice/kpt-disc.service", name="kpt-disc.service", namespace="",
                        cgroup_path="system.slice/kpt-disc.service")]

    def stop(self) -> None:
        self.stopped += 1


def gauge(stats: AgentStats, mode: str) -> float:
    return stats.get("kpod.agent.discovery.mode", **{"kpod.discovery.mode": mode})


def switches(stats: AgentStats, mode: str) -> float:
    return stats.get("kpod.agent.discovery.mode.switches", **{"kpod.discovery.mode": mode})


@pytest.fixture
def auto_parts(make_informer: Callable[..., InformerProvider],
               make_kubelet: Callable[..., KubeletProvider]) -> tuple[InformerProvider, KubeletProvider]:
    return make_informer(), make_kubelet(poll_interval=POLL)


def test_falls_back_to_kubelet_and_returns(cluster: FakeCluster, api: FakeServer, kubelet_server: FakeServer,
                                           auto_parts: tuple[InformerProvider, KubeletProvider],
                                           stats: AgentStats) -> None:
    informer, kubelet = auto_parts
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    auto = AutoProvider(informer, kubelet, stats, fallback_after=FALLBACK)
    auto.start()
    try:
        assert wait_until(auto.healthy)
        assert auto.active_mode == "informer" and [p.uid for p in auto.pods()] == [uid_of(a)]
        assert (gauge(stats, "informer"), gauge(stats, "kubelet"), gauge(stats, "local")) == (1, 0, 0)
        assert kubelet_server.requests == []  # the kubelet is left alone while the API server answers

        t_down = time.monotonic()
        api.down()
        b = make_pod("b", "shop")
        cluster.add_pod(b)  # only the kubelet can tell us about it now
        assert wait_until(lambda: auto.active_mode == "kubelet", timeout=5)
        elapsed = time.monotonic() - t_down
        assert elapsed <= FALLBACK + 2 * POLL, f"fell back after {elapsed:.2f}s"
        assert elapsed >= FALLBACK
        assert {p.uid for p in auto.pods()} == {uid_of(a), uid_of(b)}
        assert (gauge(stats, "informer"), gauge(stats, "kubelet")) == (0, 1)
        assert switches(stats, "kubelet") == 1

        c = make_pod("c", "shop")
        cluster.add_pod(c)
        cluster.delete_pod(uid_of(a))
        assert wait_until(lambda: {p.uid for p in auto.pods()} == {uid_of(b), uid_of(c)})

        api.up()
        assert wait_until(lambda: auto.active_mode == "informer", timeout=5)
        assert {p.uid for p in auto.pods()} == {uid_of(b), uid_of(c)}
        assert (gauge(stats, "informer"), gauge(stats, "kubelet")) == (1, 0)
        assert switches(stats, "informer") == 1
        assert stats.total("kpod.agent.discovery.mode.switches") == 2
        # Polling stops once the API server is back.
        time.sleep(POLL)
        n = len(kubelet_server.requests)
        time.sleep(2 * POLL)
        assert len(kubelet_server.requests) == n
    finally:
        auto.stop()


def test_local_is_the_last_resort(cluster: FakeCluster, api: FakeServer, kubelet_server: FakeServer,
                                  auto_parts: tuple[InformerProvider, KubeletProvider],
                                  stats: AgentStats) -> None:
    informer, kubelet = auto_parts
    cluster.add_pod(make_pod("a", "shop"))
    local = CgroupWorkloads()
    auto = AutoProvider(informer, kubelet, stats, fallback_after=FALLBACK, local_factory=lambda: local)
    auto.start()
    try:
        assert wait_until(auto.healthy)
        kubelet_server.down()
        api.down()
        assert wait_until(lambda: auto.active_mode == "local", timeout=5)
        assert local.started == 1
        assert [p.uid for p in auto.pods()] == ["cgroup:system.slice/kpt-disc.service"]
        assert gauge(stats, "local") == 1 and switches(stats, "local") == 1
        assert switches(stats, "kubelet") == 0  # the kubelet never answered: never switched to

        kubelet_server.up()
        assert wait_until(lambda: auto.active_mode == "kubelet", timeout=5)
        assert local.stopped == 1
        assert [p.name for p in auto.pods()] == ["a"]
        api.up()
        assert wait_until(lambda: auto.active_mode == "informer", timeout=5)
        assert (gauge(stats, "informer"), gauge(stats, "kubelet"), gauge(stats, "local")) == (1, 0, 0)
        assert stats.total("kpod.agent.discovery.mode.switches") == 3
    finally:
        auto.stop()


def test_api_server_never_answers(cluster: FakeCluster, api: FakeServer, kubelet_server: FakeServer,
                                  auto_parts: tuple[InformerProvider, KubeletProvider],
                                  stats: AgentStats) -> None:
    informer, kubelet = auto_parts
    cluster.add_pod(make_pod("a", "shop"))
    api.down()
    auto = AutoProvider(informer, kubelet, stats, fallback_after=FALLBACK)
    t0 = time.monotonic()
    auto.start()
    try:
        assert wait_until(lambda: auto.active_mode == "kubelet", timeout=5)
        assert time.monotonic() - t0 <= FALLBACK + 2 * POLL
        assert [p.name for p in auto.pods()] == ["a"]
    finally:
        auto.stop()


# --- factory ------------------------------------------------------------------------------------------
@pytest.fixture
def sa_dir(tmp_path: Path, ca: TestCA, token_file: Path) -> Path:
    """A service-account directory like the projected volume: token + ca.crt side by side."""
    d = tmp_path / "serviceaccount"
    d.mkdir()
    shutil.copy(token_file, d / "token")
    shutil.copy(ca.ca_file, d / "ca.crt")
    return d


def test_build_informer_from_config(cluster: FakeCluster, api: FakeServer, sa_dir: Path,
                                    stats: AgentStats) -> None:
    pod = make_pod("a", "shop")
    cluster.add_pod(pod)
    config = Config(node_name=NODE, discovery=DiscoveryConfig(mode=DiscoveryMode.INFORMER,
                                                              token_file=str(sa_dir / "token")))
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    provider = build_provider(config, stats, env=env)
    provider.start()
    try:
        assert wait_until(provider.healthy)
        assert [p.uid for p in provider.pods()] == [uid_of(pod)]
        assert gauge(stats, "informer") == 1
    finally:
        provider.stop()


def test_build_kubelet_from_config(cluster: FakeCluster, kubelet_server: FakeServer, ca: TestCA,
                                   sa_dir: Path, stats: AgentStats) -> None:
    cluster.add_pod(make_pod("a", "shop"))
    disc = DiscoveryConfig(mode=DiscoveryMode.KUBELET, kubelet_port=kubelet_server.port,
                           kubelet_ca_file=str(ca.ca_file), token_file=str(sa_dir / "token"),
                           kubelet_poll_interval=POLL)
    provider = build_provider(Config(discovery=disc), stats, env={"NODE_IP": "127.0.0.1"})
    provider.start()
    try:
        assert wait_until(provider.healthy)
        assert [p.name for p in provider.pods()] == ["a"]
        assert gauge(stats, "kubelet") == 1
    finally:
        provider.stop()


def test_build_auto_and_local(api: FakeServer, sa_dir: Path, stats: AgentStats) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port),
           "NODE_NAME": NODE}
    disc = DiscoveryConfig(mode=DiscoveryMode.AUTO, token_file=str(sa_dir / "token"))
    auto = build_provider(Config(discovery=disc), stats, env=env)
    assert isinstance(auto, AutoProvider)  # no node IP: auto without the kubelet fallback, not an error
    local = CgroupWorkloads()
    provider = build_provider(Config(discovery=DiscoveryConfig(mode=DiscoveryMode.LOCAL)), stats,
                              local_factory=lambda: local)
    assert provider is local
    with pytest.raises(ConfigError, match="local"):
        build_provider(Config(discovery=DiscoveryConfig(mode=DiscoveryMode.LOCAL)), stats)


@pytest.mark.parametrize(("config", "env", "message"), [
    (Config(node_name=NODE), {}, "KUBERNETES_SERVICE_HOST"),
    (Config(), {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, "node name"),
    (Config(discovery=DiscoveryConfig(mode=DiscoveryMode.KUBELET)), {}, "node-ip"),
])
def test_build_errors_are_config_errors(config: Config, env: dict[str, str], message: str,
                                        stats: AgentStats) -> None:
    with pytest.raises(ConfigError, match=message):
        build_provider(config, stats, env=env)
