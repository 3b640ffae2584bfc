"""A wire-level fake of the Kubernetes API server and of the kubelet's /pods endpoint.

Real HTTPS (certificates from `tests.fakes.tls.TestCA`), bearer-token auth (401 with a v1 Status for
a wrong or missing token), real v1 Pod JSON, and the watch protocol as the API server speaks it:

- `GET /api/v1/pods` (and `/api/v1/namespaces/<ns>/pods`) LIST with `fieldSelector`
  (spec.nodeName, metadata.namespace, metadata.name; `=`, `==`, `!=`) and `resourceVersion`
  (""/"0"/N: served from the current state; N newer than the store -> 504 like the real server);
  the list carries `metadata.resourceVersion`; items carry no kind/apiVersion, as real LISTs.
- `?watch=true`: a chunked stream of newline-delimited `{"type","object"}` events after the given
  resourceVersion (ADDED/MODIFIED/DELETED as objects enter, change in or leave the selector), BOOKMARK
  events when asked for (`allowWatchBookmarks=true`), an ERROR event with a 410 Status when the
  resourceVersion is older than the compaction point, and a clean end after `timeoutSeconds`.
- Kubelet role: `GET /pods` returns the node's PodList (as the kubelet's read-only API does).

Controls: `drop_watches()` (abrupt connection loss), `expire_watches()` (410 Gone to every open watch and
to resumes from before now), `down()` / `up()` (stop listening and close every connection / listen again
on the same port), `token` (the accepted bearer token). Every request is logged in `requests`; every
watch stream records what it sent in `watches`.

Faults: `delay_s` (every response waits that long first: a slow server), `list_body` (raw bytes served
instead of the LIST or the kubelet's /pods body: invalid JSON, a huge response), `next_watch_raw` (the next
watch stream sends these raw bytes after its initial events and is then cut without its final chunk:
a truncated stream or an invalid event; used once).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.tls import ServerCert

Obj = dict[str, Any]

NODE = "kpt-disc-node-1"
OTHER_NODE = "kpt-disc-node-2"
_TS = "2026-11-28T10:00:00Z"


def container_id(seed: str) -> str:
    """A 64-hex runtime id, deterministic per seed (like containerd's sha256-sized ids)."""
    return (uuid.uuid5(uuid.NAMESPACE_URL, seed).hex * 2)[:64]


def _container_spec(name: str, qos: str) -> Obj:
    resources: Obj = {}
    if qos == "Guaranteed":
        amounts = {"cpu": "250m", "memory": "128Mi"}
        resources = {"limits": dict(amounts), "requests": dict(amounts)}
    elif qos == "Burstable":
        resources = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    return {
        "name": name,
        "image": f"registry.example/{name}:1.0",
        "resources": resources,
        "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": True,
                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def _container_status(name: str, uid: str, restarts: int, runtime: str, running: bool = True) -> Obj:
    st: Obj = {
        "name": name,
        "state": {"running": {"startedAt": _TS}} if running else
        {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": _TS, "finishedAt": _TS,
                        "containerID": f"{runtime}://{container_id(f'{uid}/{name}/{restarts}')}"}},
        "lastState": {},
        "ready": running,
        "restartCount": restarts,
        "image": f"registry.example/{name}:1.0",
        "imageID": f"registry.example/{name}@sha256:{container_id('img/' + name)}",
        "containerID": f"{runtime}://{container_id(f'{uid}/{name}/{restarts}')}",
        "started": running,
    }
    return st


def make_pod(
    name: str,
    namespace: str = "default",
    *,
    node: str = NODE,
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    qos: str = "BestEffort",
    host_network: bool = False,
    containers: Iterable[str] = ("app",),
    init_containers: Iterable[str] = (),
    ephemeral_containers: Iterable[str] = (),
    runtime: str = "containerd",
    restarts: int = 0,
) -> Obj:
    """A v1 Pod as the API server returns it (spec defaults filled in, status from the kubelet)."""
    uid = uid or str(uuid.uuid4())
    labels = {"app.kubernetes.io/name": name} if labels is None else labels
    containers, init_containers, ephemeral_containers = (
        list(containers), list(init_containers), list(ephemeral_containers))
    spec: Obj = {
        "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ], "defaultMode": 420}}],
        "containers": [_container_spec(c, qos) for c in containers],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "nodeName": node,
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if init_containers:
        spec["initContainers"] = [_container_spec(c, qos) for c in init_containers]
    if ephemeral_containers:
        spec["ephemeralContainers"] = [
            {"name": c, "image": "registry.example/debug:1.0", "resources": {},
             "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
             "imagePullPolicy": "IfNotPresent", "stdin": True, "tty": True} for c in ephemeral_containers]
    if host_network:  # the API server omits false booleans
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    running = phase == "Running"
    status: Obj = {
        "phase": phase,
        "conditions": [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": _TS}
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "hostIP": "192.0.2.10",
        "hostIPs": [{"ip": "192.0.2.10"}],
        "podIP": "192.0.2.10" if host_network else "198.51.100.23",
        "podIPs": [{"ip": "192.0.2.10" if host_network else "198.51.100.23"}],
        "startTime": _TS,
        "containerStatuses": [_container_status(c, uid, restarts, runtime, running) for c in containers],
        "qosClass": qos,
    }
    if init_containers:
        status["initContainerStatuses"] = [
            _container_status(c, uid, 0, runtime, running=False) for c in init_containers]
    if ephemeral_containers:
        status["ephemeralContainerStatuses"] = [
            _container_status(c, uid, 0, runtime) for c in ephemeral_containers]
    return {
        "metadata": {
            "name": name,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "0",
            # when the pod object is made, as the API server stamps it (truncated to the second): the
            # agent takes it as the earliest start of the pod's kernel counters
            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "labels": labels,
        },
        "spec": spec,
        "status": status,
    }


def uid_of(pod: Obj) -> str:
    return str(pod["metadata"]["uid"])


def status_container_ids(pod: Obj) -> dict[str, str]:
    """container name -> the containerID string the pod's status announces (scheme included)."""
    out: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for st in pod["status"].get(key, []):
            out[st["name"]] = st["containerID"]
    return out


@dataclass
class _Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    obj: Obj | None  # new state (DELETED: final state)
    old: Obj | None  # previous state (MODIFIED/DELETED)


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    auth_ok: bool
    status: int = 0
    at: float = field(default_factory=time.monotonic)

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass
class WatchRecord:
    query: dict[str, str]
    sent: list[tuple[str, int, str]] = field(default_factory=list)  # (type, rv, uid)
    ended: str = ""  # timeout | dropped | expired | down
    conn: Any = None  # the connection, so drop_watches() can cut exactly the watch streams


class FakeCluster:
    """The object store behind the fake servers: pods, a resourceVersion counter and the event log."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 100
        self.pods: dict[str, Obj] = {}
        self.events: list[_Event] = []
        self.compacted_rv = 0  # a watch from an older resourceVersion gets 410 Gone
        self.expire_gen = 0  # bumped by expire_watches(): open watches send 410 and end

    def _commit(self, etype: str, new: Obj | None, old: Obj | None) -> int:
        self.rv += 1
        if new is not None:
            new["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append(_Event(self.rv, etype, copy.deepcopy(new), copy.deepcopy(old)))
        self.cond.notify_all()
        return self.rv

    def add_pod(self, pod: Obj) -> int:
        with self.cond:
            uid = uid_of(pod)
            assert uid not in self.pods, uid
            self.pods[uid] = copy.deepcopy(pod)
            return self._commit("ADDED", self.pods[uid], None)

    def modify_pod(self, uid: str, mutate: Callable[[Obj], None]) -> int:
        with self.cond:
            old = copy.deepcopy(self.pods[uid])
            mutate(self.pods[uid])
            return self._commit("MODIFIED", self.pods[uid], old)

    def restart_container(self, uid: str, name: str) -> int:
        """The kubelet restarted a container: restartCount + 1 and a new container id."""
        def bump(pod: Obj) -> None:
            for st in pod["status"]["containerStatuses"]:
                if st["name"] == name:
                    st["restartCount"] += 1
                    runtime = st["containerID"].split("://")[0]
                    seed = f"{uid}/{name}/{st['restartCount']}"
                    st["containerID"] = f"{runtime}://{container_id(seed)}"
        return self.modify_pod(uid, bump)

    def finish_pod(self, uid: str, phase: str = "Succeeded") -> int:
        def finish(pod: Obj) -> None:
            pod["status"]["phase"] = phase
            for st in pod["status"]["containerStatuses"]:
                st["state"] = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                              "reason": "Completed" if phase == "Succeeded" else "Error",
                                              "startedAt": _TS, "finishedAt": _TS,
                                              "containerID": st["containerID"]}}
                st["ready"] = False
                st["started"] = False
        return self.modify_pod(uid, finish)

    def delete_pod(self, uid: str) -> int:
        with self.cond:
            pod = self.pods.pop(uid)
            old = copy.deepcopy(pod)
            return self._commit("DELETED", pod, old)

    def bookmark(self) -> int:
        """Ask open watches (that allow bookmarks) to send a BOOKMARK at the current resourceVersion."""
        with self.cond:
            self.events.append(_Event(self.rv, "BOOKMARK", None, None))
            self.cond.notify_all()
            return self.rv

    def compact(self) -> int:
        """Forget history: watches from a resourceVersion before now get 410 Gone."""
        with self.cond:
            self.compacted_rv = self.rv
            return self.rv

    def expire_watches(self) -> int:
        """Every open watch gets an ERROR event with a 410 Status (and resumes from before now too)."""
        with self.cond:
            self.compacted_rv = self.rv
            self.expire_gen += 1
            self.cond.notify_all()
            return self.rv

    def snapshot(self) -> tuple[int, list[Obj]]:
        with self.cond:
            return self.rv, [copy.deepcopy(p) for p in self.pods.values()]


_SELECTOR = re.compile(r"^(spec\.nodeName|metadata\.namespace|metadata\.name)(==|!=|=)(.*)$")


def _field(obj: Obj, path: str) -> str:
    section, name = path.split(".")
    return str(obj.get(section, {}).get(name, ""))


def parse_field_selector(text: str) -> Callable[[Obj], bool]:
    """The API server's fieldSelector for pods (the fields used here); ValueError if unsupported."""
    terms: list[tuple[str, bool, str]] = []
    for part in filter(None, text.split(",")):
        m = _SELECTOR.match(part)
        if not m:
            raise ValueError(f'"{part.split("=")[0].rstrip("!")}" is not a known field selector')
        terms.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return lambda obj: all((_field(obj, path) == value) == eq for path, eq, value in terms)


def status_object(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the connection's thread, so a stuck client blocks nobody else.
        try:
            conn = self.fake.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.fake.tls_failures.append(repr(exc))
            return
        self.fake._track(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            self.fake._untrack(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connection resets while the test drops things on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        auth = self.headers.get("Authorization", "")
        rec = RequestRecord("GET", url.path, query, auth_ok=auth == f"Bearer {fake.token}")
        fake.requests.append(rec)
        if fake.delay_s > 0:
            time.sleep(fake.delay_s)
        if not rec.auth_ok:
            rec.status = 401
            self._json(401, status_object(401, "Unauthorized", "Unauthorized"))
            return
        if fake.role == "kubelet":
            if url.path == "/pods":
                rec.status = 200
                self._kubelet_pods()
            else:
                rec.status = 404
                self._json(404, status_object(404, "NotFound", "404 page not found"))
            return
        m = re.fullmatch(r"/api/v1(?:/namespaces/([^/]+))?/pods", url.path)
        if not m:
            rec.status = 404
            self._json(404, status_object(404, "NotFound",
                                          "the server could not find the requested resource"))
            return
        try:
            match = parse_field_selector(query.get("fieldSelector", ""))
        except ValueError as exc:
            rec.status = 400
            self._json(400, status_object(400, "BadRequest", str(exc)))
            return
        if m.group(1):
            ns = m.group(1)
            inner = match
            match = lambda o: o["metadata"]["namespace"] == ns and inner(o)  # noqa: E731
        if rec.is_watch:
            rec.status = 200
            self._watch(query, match)
        else:
            rec.status = self._list(query, match)

    # --- API server ---------------------------------------------------------------------------------
    def _list(self, query: dict[str, str], match: Callable[[Obj], bool]) -> int:
        cluster = self.server.fake.cluster
        rv, pods = cluster.snapshot()
        if self.server.fake.list_body is not None:
            self._raw(200, self.server.fake.list_body)
            return 200
        wanted = query.get("resourceVersion", "")
        if wanted not in ("", "0") and int(wanted) > rv:
            self._json(504, status_object(504, "Timeout", f"Too large resource version: {wanted}, "
                                          f"current: {rv}"))
            return 504
        items = sorted((p for p in pods if match(p)),
                       key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
        self.server.fake.lists_served.append(rv)
        self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)},
                         "items": items})
        return 200

    def _watch(self, query: dict[str, str], match: Callable[[Obj], bool]) -> None:
        fake = self.server.fake
        cluster = fake.cluster
        rec = WatchRecord(query, conn=self.connection)
        fake.watches.append(rec)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        wanted = query.get("resourceVersion", "")
        gen = fake.generation
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            with cluster.cond:
                expire_gen = cluster.expire_gen
                if wanted in ("", "0"):
                    pos = len(cluster.events)
                    initial = [_Event(cluster.rv, "ADDED", copy.deepcopy(p), None)
                               for p in cluster.pods.values() if match(p)]
                else:
                    start = int(wanted)
                    if start < cluster.compacted_rv:
                        self._expired(rec, start, cluster.compacted_rv)
                        return
                    pos = next((i for i, e in enumerate(cluster.events) if e.rv > start), len(cluster.events))
                    initial = []
            for ev in initial:
                self._send_event(rec, "ADDED", ev.obj, ev.rv)
            raw, fake.next_watch_raw = fake.next_watch_raw, None
            if raw is not None:
                self._chunk(raw)
                rec.ended = "cut"
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            while True:
                with cluster.cond:
                    while (pos >= len(cluster.events) and fake.generation == gen and not rec.ended
                           and cluster.expire_gen == expire_gen and time.monotonic() < deadline):
                        cluster.cond.wait(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                    if fake.generation != gen or rec.ended:
                        rec.ended = rec.ended or "down"
                        return
                    if cluster.expire_gen != expire_gen:
                        self._expired(rec, int(wanted or 0), cluster.compacted_rv)
                        return
                    if time.monotonic() >= deadline and pos >= len(cluster.events):
                        rec.ended = "timeout"
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    batch, pos = cluster.events[pos:], len(cluster.events)
                for ev in batch:
                    self._deliver(rec, ev, match, bookmarks)
        except OSError:
            rec.ended = rec.ended or "dropped"
            self.close_connection = True

    def _deliver(self, rec: WatchRecord, ev: _Event, match: Callable[[Obj], bool], bookmarks: bool) -> None:
        if ev.type == "BOOKMARK":
            if bookmarks:
                self._send_event(rec, "BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                                   "metadata": {"resourceVersion": str(ev.rv)}}, ev.rv)
            return
        was = ev.old is not None and match(ev.old)
        now = ev.obj is not None and match(ev.obj)
        if ev.type == "DELETED":
            etype = "DELETED" if was else ""
        elif now and not was:
            etype = "ADDED"
        elif now and was:
            etype = "MODIFIED"
        elif was and not now:
            etype = "DELETED"  # left the selector
        else:
            etype = ""
        if etype:
            self._send_event(rec, etype, ev.obj, ev.rv)

    def _send_event(self, rec: WatchRecord, etype: str, obj: Obj | None, rv: int) -> None:
        if obj is not None and etype != "BOOKMARK":
            obj = {"kind": "Pod", "apiVersion": "v1", **obj}  # watch objects carry kind/apiVersion
        self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
        uid = obj["metadata"].get("uid", "") if obj is not None else ""
        rec.sent.append((etype, rv, uid))

    def _expired(self, rec: WatchRecord, start: int, compacted: int) -> None:
        status = status_object(410, "Expired", f"too old resource version: {start} ({compacted})")
        self._chunk(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
        rec.sent.append(("ERROR", 410, ""))
        rec.ended = "expired"
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # --- kubelet --------------------------------------------------------------------------------------
    def _kubelet_pods(self) -> None:
        fake = self.server.fake
        _, pods = fake.cluster.snapshot()
        items = [p for p in pods if p["spec"].get("nodeName") == fake.node]
        body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}).encode()
        if fake.list_body is not None:
            body = fake.list_body
        if fake.kubelet_chunked:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 1024):
                self._chunk(body[i:i + 1024])
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._raw(200, body)

    def _json(self, code: int, obj: Obj) -> None:
        self._raw(code, json.dumps(obj).encode())

    def _raw(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeServer:
    """One HTTPS endpoint over a FakeCluster: role "api" (API server) or "kubelet" (/pods of `node`)."""

    def __init__(self, cluster: FakeCluster, cert: ServerCert, *, token: str, role: str = "api",
                 node: str = NODE) -> None:
        assert role in ("api", "kubelet")
        self.cluster = cluster
        self.role = role
        self.node = node
        self.token = token
        self.ssl_context = cert.server_context()
        self.requests: list[RequestRecord] = []
        self.watches: list[WatchRecord] = []
        self.lists_served: list[int] = []
        self.tls_failures: list[str] = []
        self.kubelet_chunked = False
        self.delay_s = 0.0
        self.list_body: bytes | None = None
        self.next_watch_raw: bytes | None = None
        self.generation = 0  # bumped by down(): open streams of the old generation end
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def up(self) -> FakeServer:
        assert self._server is None
        srv = _Server(("127.0.0.1", self.port), _Handler)
        srv.fake = self
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-{self.role}", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening (connection refused from now on) and cut every open connection."""
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        with self.cluster.cond:
            self.generation += 1
            self.cluster.cond.notify_all()
        self._cut_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def drop_watches(self) -> int:
        """Cut every open watch connection abruptly (mid-stream, as a crashed apiserver or LB would)."""
        with self.cluster.cond:
            open_watches = [w for w in self.watches if not w.ended]
            for w in open_watches:
                w.ended = "dropped"
            self.cluster.cond.notify_all()
        for w in open_watches:
            with contextlib.suppress(OSError):
                w.conn.shutdown(socket.SHUT_RDWR)
        return len(open_watches)

    def _cut_all(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def watch_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.is_watch]

    def list_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if not r.is_watch and r.path.endswith("/pods")]
