"""Kubelet mode: poll https://<node-ip>:<port>/pods (the kubelet's own view of its pods).

Used when the API server is unreachable (or on purpose). The kubelet's serving certificate is verified
against a configured CA; skipping verification must be asked for explicitly and is logged as a warning
(the bearer token would otherwise go to anyone answering on that address). A response larger than the
cap is refused rather than read into memory.
"""

from __future__ import annotations

import logging
import threading
from typing import cast

import urllib3
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.credentials import CredentialsError, TokenFile
from kpod_otel.discovery.index import PodStore
from kpod_otel.discovery.parse import PodParseError, load_json, parse_pod_list, parse_pods
from kpod_otel.model import PodInfo
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

COMPONENT = "discovery"


class KubeletError(Exception):
    """One poll failed (unreachable, refused, TLS, auth, too large, malformed)."""


def read_capped(resp: urllib3.BaseHTTPResponse, cap: int) -> bytes:
    """The whole body, or KubeletError as soon as it exceeds `cap` bytes."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise KubeletError(f"response of {length} bytes exceeds the {cap}-byte cap")
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.stream(amt=64 * 1024, decode_content=True):
        size += len(chunk)
        if size > cap:
            raise KubeletError(f"response exceeds the {cap}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


class KubeletProvider(PodProvider):
    """Polls the kubelet's /pods every `poll_interval` seconds in a daemon thread.

    Restartable: auto mode starts it when the API server fails and stops it when the API server is back;
    each start begins unsynced, so a stale view is never reported as healthy.
    """

    mode = "kubelet"

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        stats: AgentStats,
        *,
        token: TokenFile | None = None,
        poll_interval: float = 30.0,
        max_response_bytes: int = 32 * 1024 * 1024,
        timeout: float = 10.0,
    ) -> None:
        self._client = api_client
        self._stats = stats
        self._token = token
        self._interval = poll_interval
        self._cap = max_response_bytes
        self._timeout = timeout
        self._store = PodStore()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = False
        self._failing = False

    @property
    def poll_interval(self) -> float:
        return self._interval

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            self._synced = False
            self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="kpod-kubelet-poll",
                                        daemon=True)
        self._thread.start()

    def pods(self) -> list[PodInfo]:
        return self._store.snapshot()

    def healthy(self) -> bool:
        """True after a successful poll, while the latest poll succeeded."""
        with self._lock:
            return self._synced and not self._failing

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 1)
            self._thread = None

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except KubeletError as exc:
                with self._lock:
                    first = not self._failing
                    self._failing = True
                (log.warning if first else log.debug)("kubelet /pods: %s", exc)
            except Exception:  # never let the poller die
                log.exception("kubelet /pods: unexpected error")
                self._stats.error(COMPONENT, "kubelet")
            stop.wait(self._interval)

    def poll_once(self) -> list[PodInfo]:
        """One GET /pods; on success the view is replaced (reconciled). Raises KubeletError."""
        try:
            method, url, headers, body, post = self._client.param_serialize(
                "GET", "/pods", header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            rest = self._client.call_api(method, url, headers, body, post,
                                         _request_timeout=(self._timeout, self._timeout))
            resp = cast(urllib3.BaseHTTPResponse, rest.response)
        except (ApiException, urllib3.exceptions.HTTPError, OSError, CredentialsError) as exc:
            self._stats.error(COMPONENT, "kubelet")
            raise KubeletError(f"GET {self._client.configuration.host}/pods: {type(exc).__name__}: "
                               f"{exc}") from None
        complete = False
        try:
            if resp.status == 401 and self._token is not None:
                self._token.invalidate()
            if resp.status != 200:
                self._stats.error(COMPONENT, "auth" if resp.status in (401, 403) else "kubelet")
                raise KubeletError(f"GET /pods: HTTP {resp.status} {resp.reason}")
            try:
                raw = read_capped(resp, self._cap)
            except KubeletError:
                self._stats.error(COMPONENT, "too_large")
                raise
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                self._stats.error(COMPONENT, "kubelet")
                raise KubeletError(f"GET /pods: reading the body: {exc}") from None
            complete = True
        finally:
            if not complete:
                resp.close()  # unread bytes must not be mistaken for the next response
            resp.release_conn()
        try:
            plist = parse_pod_list(load_json(raw))
        except (ValueError, PodParseError) as exc:
            self._stats.error(COMPONENT, "parse")
            raise KubeletError(f"GET /pods: malformed pod list: {exc}") from None
        pods, errors = parse_pods(plist.items)
        for err in errors:
            self._stats.error(COMPONENT, "parse")
            log.warning("kubelet /pods: skipping malformed pod: %s", err)
        added, removed = self._store.replace(pods)
        with self._lock:
            recovered = self._failing
            self._synced = True
            self._failing = False
        if recovered:
            log.info("kubelet /pods: answering again")
        if added or removed:
            log.debug("kubelet /pods: %d pods (+%d -%d)", len(pods), added, removed)
        return pods
