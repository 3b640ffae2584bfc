"""API server and kubelet faults against the wire-level fakes: each gives a clear log line and a
self-metric (`kpod.agent.errors{kpod.component=discovery}`), and discovery recovers by itself."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kpod_otel.discovery.informer import InformerProvider
from kpod_otel.discovery.kubelet import KubeletProvider
from kpod_otel.selfmetrics import AgentStats
from tests.discovery.helpers import API_TOKEN, ROTATED_TOKEN, wait_until
from tests.fakes.k8s import FakeCluster, FakeServer, make_pod, uid_of
from tests.fakes.tls import TestCA

MakeInformer = Callable[..., InformerProvider]
MakeKubelet = Callable[..., KubeletProvider]


def errors(stats: AgentStats, kind: str) -> float:
    return stats.get("kpod.agent.errors", **{"kpod.component": "discovery", "error.type": kind})


def uids(provider: InformerProvider | KubeletProvider) -> set[str]:
    return {p.uid for p in provider.pods()}


def logged(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    """Messages at WARNING or above that contain every needle."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and all(n in r.getMessage() for n in needles)]


def started(make_informer: MakeInformer, api: FakeServer, **kw: float) -> InformerProvider:
    informer = make_informer(**kw)
    informer.start()
    # a WatchRecord exists once the stream is open (after any delay): faults aimed at it then land
    assert wait_until(lambda: informer.healthy() and any(not w.ended for w in api.watches))
    return informer


def test_slow_list_times_out_is_counted_and_recovers(cluster: FakeCluster, api: FakeServer,
                                                     make_informer: MakeInformer, stats: AgentStats,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    api.delay_s = 0.3  # slow but within the read timeout: served normally
    informer = started(make_informer, api, list_timeout=1.0)
    assert uids(informer) == {uid_of(a)}
    assert errors(stats, "unavailable") == 0
    api.delay_s = 2.0  # slower than the LIST's read timeout
    cluster.expire_watches()  # 410 Gone: the informer must re-LIST
    assert wait_until(lambda: errors(stats, "unavailable") >= 2, timeout=15)
    assert not informer.healthy()
    assert logged(caplog, "API server", "LIST pods", "timed out")
    api.delay_s = 0.0
    b = make_pod("b", "shop")
    cluster.add_pod(b)
    assert wait_until(lambda: informer.healthy() and uids(informer) == {uid_of(a), uid_of(b)}, timeout=15)


def test_truncated_watch_stream_resumes_without_losing_events(cluster: FakeCluster, api: FakeServer,
                                                              make_informer: MakeInformer, stats: AgentStats,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    informer = started(make_informer, api)
    rv_before = informer.resource_version
    # Half an event, then the connection is cut without the stream's final chunk.
    api.next_watch_raw = b'{"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "ha'
    api.drop_watches()
    assert wait_until(lambda: any(w.ended == "cut" for w in api.watches))
    a = make_pod("a", "shop")
    cluster.add_pod(a)  # an event after the cut arrives through the resumed watch
    assert wait_until(lambda: uid_of(a) in uids(informer))
    assert informer.healthy()
    cut_at = next(i for i, w in enumerate(api.watches) if w.ended == "cut")
    # resumed from the last resourceVersion seen, not from scratch (no re-LIST needed)
    assert api.watches[cut_at + 1].query["resourceVersion"] == rv_before
    assert errors(stats, "watch_dropped") >= 1
    assert [m for m in caplog.messages if "watch dropped" in m and "resuming from resourceVersion" in m]


def test_invalid_json_in_list_is_counted_and_recovers(cluster: FakeCluster, api: FakeServer,
                                                      make_informer: MakeInformer, stats: AgentStats,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    api.list_body = b'{"kind": "PodList", "apiVersion": "v1", "items": [{"metadata": '
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: errors(stats, "parse") >= 2)
    assert not informer.healthy() and informer.pods() == []
    assert logged(caplog, "LIST pods: malformed response")
    api.list_body = None
    assert wait_until(lambda: informer.healthy() and uids(informer) == {uid_of(a)})


def test_invalid_json_in_a_watch_event_is_counted_and_recovers(cluster: FakeCluster, api: FakeServer,
                                                               make_informer: MakeInformer,
                                                               stats: AgentStats,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    informer = started(make_informer, api)
    api.next_watch_raw = b"this is not JSON\n"
    api.drop_watches()
    assert wait_until(lambda: errors(stats, "parse") >= 1)
    assert logged(caplog, "WATCH pods", "not JSON")
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    assert wait_until(lambda: informer.healthy() and uid_of(a) in uids(informer))


def test_invalid_json_from_the_kubelet_is_counted_and_recovers(cluster: FakeCluster, kubelet_server: FakeServer,
                                                               make_kubelet: MakeKubelet, stats: AgentStats,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    kubelet_server.list_body = b'{"kind": "PodList", "items": [}'
    kubelet = make_kubelet()
    kubelet.start()
    assert wait_until(lambda: errors(stats, "parse") >= 2)
    assert not kubelet.healthy() and kubelet.pods() == []
    assert logged(caplog, "kubelet /pods", "malformed pod list")
    kubelet_server.list_body = json.dumps({"kind": "PodList", "items": "not a list"}).encode()
    n = errors(stats, "parse")
    assert wait_until(lambda: errors(stats, "parse") >= n + 1)
    kubelet_server.list_body = None
    assert wait_until(lambda: kubelet.healthy() and uids(kubelet) == {uid_of(a)})


def test_ten_megabyte_kubelet_response_is_refused_then_recovers(cluster: FakeCluster,
                                                                kubelet_server: FakeServer,
                                                                make_kubelet: MakeKubelet, stats: AgentStats,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    huge = make_pod("huge", "shop")
    huge["metadata"]["annotations"] = {"example.com/blob": "x" * (10 * 1024 * 1024)}
    body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [a, huge]}).encode()
    assert len(body) > 10 * 1024 * 1024
    kubelet_server.list_body = body
    kubelet = make_kubelet(max_response_bytes=8 * 1024 * 1024)
    kubelet.start()
    assert wait_until(lambda: errors(stats, "too_large") >= 1)
    assert not kubelet.healthy()
    assert logged(caplog, "kubelet /pods", "exceeds the", "cap")
    kubelet_server.list_body = None
    assert wait_until(lambda: kubelet.healthy() and uids(kubelet) == {uid_of(a)})


def test_ten_megabyte_list_from_the_api_server_is_parsed(cluster: FakeCluster, api: FakeServer,
                                                         make_informer: MakeInformer, stats: AgentStats) -> None:
    # A LIST this large is legitimate (big annotations): it must be parsed, not refused.
    huge = make_pod("huge", "shop")
    huge["metadata"]["annotations"] = {"example.com/blob": "x" * (10 * 1024 * 1024)}
    cluster.add_pod(huge)
    informer = started(make_informer, api)
    assert uids(informer) == {uid_of(huge)}
    assert stats.total("kpod.agent.errors") == 0


def test_401_after_rotation_rereads_a_token_file_whose_stamp_did_not_change(
        cluster: FakeCluster, api: FakeServer, token_file: Path, make_informer: MakeInformer,
        stats: AgentStats, caplog: pytest.LogCaptureFixture) -> None:
    """The file changes in place with the same size and mtime: only the 401 makes the agent re-read it."""
    assert len(API_TOKEN) == len(ROTATED_TOKEN)
    informer = started(make_informer, api)
    st = os.stat(token_file)
    with open(token_file, "r+") as fh:  # same inode, same size
        fh.write(ROTATED_TOKEN + "\n")
    os.utime(token_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(token_file)
    assert (st2.st_ino, st2.st_mtime_ns, st2.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)
    api.token = ROTATED_TOKEN
    api.drop_watches()
    assert wait_until(lambda: any(r.status == 401 for r in api.requests))
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    assert wait_until(lambda: informer.healthy() and uid_of(a) in uids(informer))
    assert errors(stats, "auth") >= 1
    assert logged(caplog, "401")
    first_401 = next(i for i, r in enumerate(api.requests) if r.status == 401)
    assert all(r.auth_ok for r in api.requests[first_401 + 1:])  # one 401, then the new token at once
    for record in caplog.records:
        assert API_TOKEN not in record.getMessage() and ROTATED_TOKEN not in record.getMessage()


def test_tls_failure_is_counted_and_recovers(cluster: FakeCluster, api: FakeServer, ca: TestCA, tmp_path: Path,
                                             make_informer: MakeInformer, stats: AgentStats,
                                             caplog: pytest.LogCaptureFixture) -> None:
    informer = started(make_informer, api)
    good_context = api.ssl_context
    rogue = TestCA(tmp_path, "kpt-rel-rogue-ca").issue("kpt-rel-rogue-api")
    api.ssl_context = rogue.server_context()  # the server now presents a certificate we must not trust
    requests_before = len(api.requests)
    api.drop_watches()
    assert wait_until(lambda: len(api.tls_failures) >= 2 and errors(stats, "unavailable") >= 2)
    assert not informer.healthy()
    assert len(api.requests) == requests_before  # no request (and no token) went over the bad TLS
    assert logged(caplog, "API server", "SSL")
    api.ssl_context = good_context
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    assert wait_until(lambda: informer.healthy() and uids(informer) == {uid_of(a)}, timeout=10)
