"""Credentials and TLS for the API server and the kubelet, built on the `kubernetes` client's
Configuration (so its urllib3 pool does the TLS verification and bearer-token auth).

Projected service-account tokens rotate (the kubelet swaps the file's symlink about hourly), so the
token is re-read whenever the file changes and after a 401. Tokens are never logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from kpod_otel.config import DiscoveryConfig

log = logging.getLogger(__name__)


class CredentialsError(RuntimeError):
    """Credentials or endpoints cannot be set up (missing token file, no in-cluster environment)."""


class TokenFile:
    """A bearer token read from a file, re-read when the file changes (stat) or on demand (after 401)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def get(self) -> str:
        try:
            st = os.stat(self.path)  # follows the projected volume's ..data symlink
        except OSError as exc:
            raise CredentialsError(f"token file {self.path}: {exc.strerror}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    token = Path(self.path).read_text().strip()
                except OSError as exc:
                    raise CredentialsError(f"token file {self.path}: {exc.strerror}") from None
                if self._stamp is not None and token != self._token:
                    log.info("bearer token in %s changed; using the new one", self.path)
                self._token, self._stamp = token, stamp
            return self._token

    def invalidate(self) -> None:
        """Force a re-read on the next `get()` (the server answered 401)."""
        with self._lock:
            self._stamp = None


def _no_retries() -> urllib3.Retry:
    # Retries and backoff are ours (tenacity / poll interval); hidden urllib3 retries would distort both.
    return urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0)


def bearer_configuration(host: str, token: TokenFile, *, ca_file: str = "",
                         insecure_skip_verify: bool = False) -> k8s_client.Configuration:
    """A client Configuration that verifies `host` against `ca_file` and sends the file's token."""
    cfg = k8s_client.Configuration()
    cfg.host = host
    cfg.retries = _no_retries()
    if insecure_skip_verify:
        cfg.verify_ssl = False
    else:
        cfg.verify_ssl = True
        cfg.ssl_ca_cert = ca_file or None
    cfg.api_key_prefix["BearerToken"] = "Bearer"
    # The key must be present for the client to call the refresh hook; the hook fills in the token.
    cfg.api_key["BearerToken"] = ""

    def refresh(c: k8s_client.Configuration) -> None:
        c.api_key["BearerToken"] = token.get()

    cfg.refresh_api_key_hook = refresh  # type: ignore[assignment]
    return cfg


@dataclass(frozen=True, slots=True)
class ApiEndpoint:
    """How to reach the API server: in-cluster (host + CA + rotating token) or a kubeconfig file."""

    host: str = ""
    ca_file: str = ""
    token_file: str = ""
    kubeconfig: str = ""

    @classmethod
    def from_config(cls, disc: DiscoveryConfig, env: Mapping[str, str] | None = None) -> ApiEndpoint:
        if disc.kubeconfig:
            return cls(kubeconfig=disc.kubeconfig)
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise CredentialsError(
                "not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset) and discovery.kubeconfig is empty")
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        # The service-account CA sits next to the token in the projected volume.
        return cls(host=f"https://{host}:{port}", ca_file=str(Path(disc.token_file).with_name("ca.crt")),
                   token_file=disc.token_file)

    def api_client(self) -> tuple[k8s_client.ApiClient, TokenFile | None]:
        """A client for this endpoint, and the token file it reads (None with a kubeconfig)."""
        if self.kubeconfig:
            cfg = k8s_client.Configuration()
            try:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=self.kubeconfig, client_configuration=cfg, persist_config=False)
            except (k8s_config.ConfigException, OSError) as exc:
                raise CredentialsError(f"kubeconfig {self.kubeconfig}: {exc}") from None
            cfg.retries = _no_retries()
            return k8s_client.ApiClient(cfg), None
        token = TokenFile(self.token_file)
        return k8s_client.ApiClient(bearer_configuration(self.host, token, ca_file=self.ca_file)), token


@dataclass(frozen=True, slots=True)
class KubeletEndpoint:
    """The node's kubelet: https://<node-ip>:<port>, its CA, and the service-account token file."""

    host: str
    ca_file: str
    token_file: str
    insecure_skip_verify: bool = False

    @classmethod
    def from_config(cls, disc: DiscoveryConfig, env: Mapping[str, str] | None = None) -> KubeletEndpoint:
        env = os.environ if env is None else env
        # NODE_IP is what the DaemonSet sets from status.hostIP via the downward API.
        ip = disc.node_ip or env.get("NODE_IP", "")
        if not ip:
            raise CredentialsError("kubelet mode needs discovery.node-ip (or NODE_IP from status.hostIP)")
        if ":" in ip:
            ip = f"[{ip}]"
        return cls(host=f"https://{ip}:{disc.kubelet_port}", ca_file=disc.kubelet_ca_file,
                   token_file=disc.token_file, insecure_skip_verify=disc.kubelet_insecure_skip_verify)

    def api_client(self) -> tuple[k8s_client.ApiClient, TokenFile]:
        if self.insecure_skip_verify:
            log.warning("kubelet TLS verification is DISABLED (discovery.kubelet-insecure-skip-verify: "
                        "true): the bearer token is sent to whoever answers at %s", self.host)
            # Warned once here; urllib3 would otherwise warn on every poll.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        token = TokenFile(self.token_file)
        cfg = bearer_configuration(self.host, token, ca_file=self.ca_file,
                                   insecure_skip_verify=self.insecure_skip_verify)
        return k8s_client.ApiClient(cfg), token
