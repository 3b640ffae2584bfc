"""Informer mode: LIST the node's pods from the API server, then WATCH from the list's resourceVersion.

- A dropped watch resumes from the last resourceVersion seen (events and bookmarks advance it), so no
  event is lost or applied twice.
- `410 Gone` (an ERROR event with a Status of code 410, or a 410 response) means that resourceVersion
  has been compacted away: re-LIST (consistent read) and reconcile, which removes pods deleted while we
  were disconnected.
- Every `resync_interval` the watch is ended and the list is refreshed, as a safety net.
- Failures to reach the API server back off exponentially with full jitter (tenacity), so a fleet of
  agents does not hammer a recovering API server in lockstep.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import urllib3
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.credentials import CredentialsError, TokenFile
from kpod_otel.discovery.index import PodStore
from kpod_otel.discovery.parse import (
    PodParseError,
    load_json,
    object_resource_version,
    object_uid,
    parse_pod,
    parse_pod_list,
    parse_pods,
)
from kpod_otel.model import PodInfo
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

COMPONENT = "discovery"


class ApiUnavailable(Exception):
    """The API server could not be reached or refused us; retried with backoff."""


class _Stopped(Exception):
    """stop() was called while waiting."""


def iter_lines(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Newline-delimited JSON lines of a (chunked) watch response, as they arrive."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        buf += chunk
        while True:
            line, sep, rest = buf.partition(b"\n")
            if not sep:
                break
            buf = rest
            if line.strip():
                yield line
    if buf.strip():
        yield buf


class InformerProvider(PodProvider):
    """List+watch of `spec.nodeName=<node_name>` pods in a daemon thread."""

    mode = "informer"

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        node_name: str,
        stats: AgentStats,
        *,
        token: TokenFile | None = None,
        resync_interval: float = 300.0,
        backoff_max: float = 30.0,
        backoff_multiplier: float = 0.5,
        connect_timeout: float = 10.0,
        list_timeout: float = 60.0,
    ) -> None:
        if not node_name:
            raise ValueError("informer mode needs the node name (node-name / NODE_NAME)")
        self._api = k8s_client.CoreV1Api(api_client)
        self._api_client = api_client
        self._node = node_name
        self._stats = stats
        self._token = token
        self._resync_interval = resync_interval
        self._backoff_max = backoff_max
        self._backoff_multiplier = backoff_multiplier
        self._connect_timeout = connect_timeout
        self._list_timeout = list_timeout
        self._store = PodStore()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: urllib3.BaseHTTPResponse | None = None
        self._rv = ""  # last resourceVersion seen; "" = must LIST
        self._consistent_relist = False  # after 410: LIST with resourceVersion="" (not from the cache)
        self._next_resync = 0.0
        self._synced = False
        self._failing = False

    # --- PodProvider -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kpod-informer", daemon=True)
        self._thread.start()

    def pods(self) -> list[PodInfo]:
        return self._store.snapshot()

    def healthy(self) -> bool:
        """True once listed and while the last request to the API server succeeded."""
        with self._lock:
            return self._synced and not self._failing

    def stop(self) -> None:
        self._stop.set()
        self._abort_stream()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def resource_version(self) -> str:
        """The resourceVersion a resumed watch would start from ("" if a LIST is due)."""
        with self._lock:
            return self._rv

    # --- loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            retrying = Retrying(
                wait=wait_random_exponential(multiplier=self._backoff_multiplier, max=self._backoff_max),
                retry=retry_if_exception_type(ApiUnavailable),
                sleep=self._sleep,
                before_sleep=self._before_sleep,
                reraise=True,
            )
            try:
                retrying(self._session)
            except _Stopped:
                return
            except Exception:  # never let the thread die: log, count, back off and go on
                log.exception("pod informer: unexpected error")
                self._stats.error(COMPONENT, "informer")
                if self._stop.wait(self._backoff_max):
                    return

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def _before_sleep(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ApiUnavailable):
            # A long outage logs its first failures, then every tenth (each is still counted).
            n = state.attempt_number
            level = logging.WARNING if n <= 3 or n % 10 == 0 else logging.DEBUG
            log.log(level, "API server: %s; retrying in %.1fs (attempt %d)", exc,
                    state.next_action.sleep if state.next_action else 0, n)

    def _session(self) -> None:
        """LIST if needed, then one WATCH until it ends. Raises to back off; returns to go on at once."""
        if self._stop.is_set():
            raise _Stopped
        if not self.resource_version or time.monotonic() >= self._next_resync:
            self._list()
        self._watch()

    def _mark(self, *, failing: bool) -> None:
        with self._lock:
            if failing and not self._failing:
                log.warning("pod informer: API server unavailable")
            elif not failing and self._failing:
                log.info("pod informer: API server reachable again")
            self._failing = failing

    def _failed(self, what: str, exc: BaseException) -> ApiUnavailable:
        """Classify a request failure: count it, mark unhealthy, re-read the token after a 401."""
        if isinstance(exc, ApiException):
            if exc.status == 401 and self._token is not None:
                self._token.invalidate()
            detail = f"{what}: HTTP {exc.status} {exc.reason}"
            kind = "auth" if exc.status in (401, 403) else "api"
        elif isinstance(exc, CredentialsError):
            detail, kind = f"{what}: {exc}", "auth"
        else:
            detail = f"{what}: {type(exc).__name__}: {exc}"
            kind = "unavailable"
        self._stats.error(COMPONENT, kind)
        self._mark(failing=True)
        return ApiUnavailable(detail)

    def _list(self) -> None:
        rv_param = "" if self._consistent_relist else "0"
        try:
            # _preload_content=False: the raw urllib3 response (our parser reads the JSON, not the models).
            resp = cast(urllib3.BaseHTTPResponse, self._api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self._node}",
                resource_version=rv_param or None,
                _preload_content=False,
                _request_timeout=(self._connect_timeout, self._list_timeout),
            ))
            try:
                body = resp.data
            finally:
                resp.release_conn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError, CredentialsError) as exc:
            raise self._failed("LIST pods", exc) from None
        try:
            plist = parse_pod_list(load_json(body))
        except (ValueError, PodParseError) as exc:  # JSONDecodeError is a ValueError
            self._stats.error(COMPONENT, "parse")
            raise ApiUnavailable(f"LIST pods: malformed response: {exc}") from None
        pods, errors = parse_pods(plist.items)
        self._log_parse_errors(errors)
        added, removed = self._store.replace(pods)
        with self._lock:
            self._rv = plist.resource_version
            self._synced = True
            self._consistent_relist = False
        self._mark(failing=False)
        self._next_resync = time.monotonic() + self._resync_interval
        log.info("pod informer: listed %d pods on %s at resourceVersion %s (+%d -%d)",
                 len(pods), self._node, plist.resource_version, added, removed)

    def _watch(self) -> None:
        remaining = self._next_resync - time.monotonic()
        if remaining <= 0:
            return
        timeout = max(1, math.ceil(remaining))
        try:
            resp = cast(urllib3.BaseHTTPResponse, self._api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self._node}",
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                watch=True,
                timeout_seconds=timeout,
                _preload_content=False,
                # The server ends the watch after `timeout`; a read stalled well beyond it is a dead link.
                _request_timeout=(self._connect_timeout, timeout + 30),
            ))
        except ApiException as exc:
            if exc.status == 410:
                self._expired("WATCH answered 410 Gone")
                return
            raise self._failed("WATCH pods", exc) from None
        except (urllib3.exceptions.HTTPError, OSError, CredentialsError) as exc:
            raise self._failed("WATCH pods", exc) from None
        self._mark(failing=False)
        with self._lock:
            self._resp = resp
        complete = False  # only a stream read to its end may go back to the pool for keep-alive
        try:
            if self._stop.is_set():
                raise _Stopped
            for line in iter_lines(resp):
                if self._stop.is_set():
                    raise _Stopped
                if not self._event(line):
                    return  # 410: the session loop re-lists at once
            complete = True
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if self._stop.is_set():
                raise _Stopped from None
            # The stream broke (server restart, load balancer idle cut): resume at once from our rv.
            # Counted, so a flapping link shows in the self-metrics and not only in the log.
            self._stats.error(COMPONENT, "watch_dropped")
            log.info("pod informer: watch dropped (%s); resuming from resourceVersion %s",
                     type(exc).__name__, self.resource_version)
        finally:
            with self._lock:
                self._resp = None
            if not complete:
                resp.close()  # unread bytes must not be mistaken for the next response
            resp.release_conn()

    def _expired(self, why: str) -> None:
        log.info("pod informer: %s at resourceVersion %s; re-listing", why, self.resource_version)
        with self._lock:
            self._rv = ""
            self._consistent_relist = True

    def _event(self, line: bytes) -> bool:
        """Apply one watch event; False when the watch must end (410 Gone)."""
        try:
            event = load_json(line)
        except ValueError:
            self._stats.error(COMPONENT, "parse")
            raise ApiUnavailable("WATCH pods: a line of the stream is not JSON") from None
        if not isinstance(event, dict):
            self._stats.error(COMPONENT, "parse")
            raise ApiUnavailable("WATCH pods: an event is not a JSON object")
        etype, obj = event.get("type"), event.get("object")
        if etype == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                self._expired("watch event 410 Gone")
                return False
            self._stats.error(COMPONENT, "api")
            msg = obj.get("message", "") if isinstance(obj, dict) else ""
            raise ApiUnavailable(f"WATCH pods: ERROR event code {code}: {msg}")
        rv = object_resource_version(obj)
        if etype in ("ADDED", "MODIFIED"):
            try:
                self._store.upsert(parse_pod(obj))
            except PodParseError as exc:
                self._log_parse_errors([exc])
        elif etype == "DELETED":
            uid = object_uid(obj)
            if uid:
                self._store.remove(uid)
            else:
                self._log_parse_errors([PodParseError("DELETED event without metadata.uid")])
        elif etype != "BOOKMARK":
            self._stats.error(COMPONENT, "parse")
            log.warning("pod informer: ignoring watch event of unknown type %r", etype)
        if rv:
            with self._lock:
                self._rv = rv
        return True

    def _log_parse_errors(self, errors: list[PodParseError]) -> None:
        for err in errors:
            self._stats.error(COMPONENT, "parse")
            log.warning("pod informer: skipping malformed pod: %s", err)

    def _abort_stream(self) -> None:
        with self._lock:
            resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):  # best effort while stopping
                resp.shutdown()  # unblocks the reading thread
