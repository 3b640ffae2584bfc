"""Build the configured discovery provider from `Config` (what the agent calls)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from kpod_otel.config import Config, ConfigError, DiscoveryConfig, DiscoveryMode
from kpod_otel.discovery.auto import AutoProvider, report_mode
from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.credentials import ApiEndpoint, CredentialsError, KubeletEndpoint
from kpod_otel.discovery.informer import InformerProvider
from kpod_otel.discovery.kubelet import KubeletProvider
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)


def node_name(config: Config, env: Mapping[str, str] | None = None) -> str:
    """`node-name`, else NODE_NAME (the DaemonSet sets it from spec.nodeName via the downward API)."""
    env = os.environ if env is None else env
    return config.node_name or env.get("NODE_NAME", "")


def build_informer(config: Config, stats: AgentStats, env: Mapping[str, str] | None = None,
                   **tuning: float) -> InformerProvider:
    disc = config.discovery
    client, token = ApiEndpoint.from_config(disc, env).api_client()
    return InformerProvider(client, node_name(config, env), stats, token=token,
                            resync_interval=disc.resync_interval, **tuning)


def build_kubelet(disc: DiscoveryConfig, stats: AgentStats,
                  env: Mapping[str, str] | None = None) -> KubeletProvider:
    client, token = KubeletEndpoint.from_config(disc, env).api_client()
    return KubeletProvider(client, stats, token=token, poll_interval=disc.kubelet_poll_interval,
                           max_response_bytes=disc.kubelet_max_response_bytes)


def build_provider(config: Config, stats: AgentStats,
                   local_factory: Callable[[], PodProvider] | None = None,
                   env: Mapping[str, str] | None = None) -> PodProvider:
    """The provider for `discovery.mode`. Raises ConfigError when the mode cannot work here.

    `local_factory` builds the local cgroup provider (local mode, and auto mode's last resort).
    """
    mode = config.discovery.mode
    try:
        if mode is DiscoveryMode.LOCAL:
            if local_factory is None:
                raise ConfigError("kpod.discovery.mode: local discovery is not available in this build")
            provider = local_factory()
        elif mode is DiscoveryMode.INFORMER:
            provider = build_informer(config, stats, env)
        elif mode is DiscoveryMode.KUBELET:
            provider = build_kubelet(config.discovery, stats, env)
        else:
            informer = build_informer(config, stats, env)
            try:
                kubelet: KubeletProvider | None = build_kubelet(config.discovery, stats, env)
            except CredentialsError as exc:
                log.warning("auto discovery without the kubelet fallback: %s", exc)
                kubelet = None
            return AutoProvider(informer, kubelet, stats, fallback_after=config.discovery.api_fallback_after,
                                local_factory=local_factory)
    except (CredentialsError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"kpod.discovery.mode: {mode.value}: {exc}") from None
    report_mode(stats, mode.value, (mode.value,))
    return provider
