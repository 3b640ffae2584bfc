"""Informer mode against the wire-level fake API server (real HTTPS, real watch streams)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from kpod_otel.discovery.credentials import ApiEndpoint
from kpod_otel.discovery.informer import InformerProvider
from kpod_otel.selfmetrics import AgentStats
from tests.discovery.helpers import API_TOKEN, FAST_INFORMER, ROTATED_TOKEN, wait_until
from tests.fakes.k8s import NODE, OTHER_NODE, FakeCluster, FakeServer, make_pod, uid_of
from tests.fakes.tls import TestCA

MakeInformer = Callable[..., InformerProvider]


def uids(provider: InformerProvider) -> set[str]:
    return {p.uid for p in provider.pods()}


def node_uids(cluster: FakeCluster) -> set[str]:
    """The truth: what the fake store holds for our node right now."""
    _, pods = cluster.snapshot()
    return {uid_of(p) for p in pods if p["spec"]["nodeName"] == NODE}


def errors(stats: AgentStats, kind: str) -> float:
    return stats.get("kpod.agent.errors", **{"kpod.component": "discovery", "error.type": kind})


def test_initial_list_only_this_nodes_pods(cluster: FakeCluster, api: FakeServer,
                                           make_informer: MakeInformer) -> None:
    mine = [make_pod(f"web-{i}", "shop") for i in range(3)]
    theirs = make_pod("web-x", "shop", node=OTHER_NODE)
    for p in [*mine, theirs]:
        cluster.add_pod(p)
    informer = make_informer()
    informer.start()
    assert wait_until(informer.healthy)
    assert uids(informer) == {uid_of(p) for p in mine}
    first = api.list_requests()[0]
    assert first.query["fieldSelector"] == f"spec.nodeName={NODE}"
    # The watch starts from exactly the resourceVersion the LIST answered with.
    assert wait_until(lambda: len(api.watch_requests()) == 1)
    watch = api.watch_requests()[0]
    assert watch.query["resourceVersion"] == str(api.lists_served[0])
    assert watch.query["allowWatchBookmarks"] == "true"
    assert watch.query["fieldSelector"] == f"spec.nodeName={NODE}"
    by_uid = {p.uid: p for p in informer.pods()}
    for p in mine:
        info = by_uid[uid_of(p)]
        assert (info.name, info.namespace, info.node_name) == (p["metadata"]["name"], "shop", NODE)


def test_watch_add_modify_delete(cluster: FakeCluster, api: FakeServer, make_informer: MakeInformer) -> None:
    a = make_pod("api-a", "shop")
    cluster.add_pod(a)
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: len(api.watch_requests()) == 1 and informer.healthy())
    b = make_pod("api-b", "shop", labels={"tier": "backend"})
    rv_b = cluster.add_pod(b)
    cluster.add_pod(make_pod("elsewhere", "shop", node=OTHER_NODE))
    assert wait_until(lambda: uid_of(b) in uids(informer))
    assert next(p for p in informer.pods() if p.uid == uid_of(b)).labels == {"tier": "backend"}
    rv = cluster.restart_container(uid_of(a), "app")
    expected_id = cluster.pods[uid_of(a)]["status"]["containerStatuses"][0]["containerID"].split("://")[1]

    def restarted() -> bool:
        pod = next((p for p in informer.pods() if p.uid == uid_of(a)), None)
        return pod is not None and pod.containers[0].restart_count == 1

    assert wait_until(restarted)
    pod_a = next(p for p in informer.pods() if p.uid == uid_of(a))
    assert pod_a.containers[0].container_id == expected_id
    assert informer.resource_version == str(rv)
    cluster.delete_pod(uid_of(a))
    assert wait_until(lambda: uids(informer) == {uid_of(b)})
    assert uids(informer) == node_uids(cluster)
    # Only our node's events were streamed (fieldSelector honoured on the watch).
    sent = api.watches[0].sent
    assert [(t, u) for t, _, u in sent] == [
        ("ADDED", uid_of(b)), ("MODIFIED", uid_of(a)), ("DELETED", uid_of(a))]
    assert sent[0][1] == rv_b
    assert len(api.list_requests()) == 1


def test_watch_drop_resumes_from_last_resource_version(cluster: FakeCluster, api: FakeServer,
                                                       make_informer: MakeInformer) -> None:
    cluster.add_pod(make_pod("db-0", "data"))
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: len(api.watch_requests()) == 1 and informer.healthy())
    pods = [make_pod(f"db-{i}", "data") for i in range(1, 4)]
    last_rv = 0
    for p in pods:
        last_rv = cluster.add_pod(p)
    assert wait_until(lambda: informer.resource_version == str(last_rv))
    # Changes on another node move the store's resourceVersion; a bookmark carries it to us.
    cluster.add_pod(make_pod("other", "data", node=OTHER_NODE))
    bookmark_rv = cluster.bookmark()
    assert bookmark_rv > last_rv
    assert wait_until(lambda: informer.resource_version == str(bookmark_rv))

    assert api.drop_watches() == 1
    assert wait_until(lambda: len(api.watch_requests()) == 2)
    assert api.watch_requests()[1].query["resourceVersion"] == str(bookmark_rv)
    after = make_pod("db-9", "data")
    cluster.add_pod(after)
    cluster.delete_pod(uid_of(pods[0]))
    assert wait_until(lambda: uids(informer) == node_uids(cluster))

    # Drop again with changes that happen while nobody watches: they must arrive exactly once.
    rv_before = int(informer.resource_version)
    api.down()
    late = make_pod("db-late", "data")
    cluster.add_pod(late)
    cluster.restart_container(uid_of(after), "app")
    api.up()
    assert wait_until(lambda: uids(informer) == node_uids(cluster) and informer.healthy(), timeout=10)
    resumed = api.watch_requests()[-1]
    assert resumed.query["resourceVersion"] == str(rv_before)
    assert len(api.list_requests()) == 1  # resumed, never re-listed
    # No event lost or delivered twice across the three streams (what the fake actually sent).
    events = [(t, rv) for w in api.watches for t, rv, _ in w.sent if t != "BOOKMARK"]
    assert len(events) == len(set(events))
    node_events = [e for e in cluster.events if e.type != "BOOKMARK"
                   and (e.obj or {}).get("spec", {}).get("nodeName") == NODE and e.rv > api.lists_served[0]]
    assert sorted(rv for _, rv in events) == [e.rv for e in node_events]
    got = next(p for p in informer.pods() if p.uid == uid_of(after))
    assert got.containers[0].restart_count == 1


def test_410_relists_and_removes_pods_deleted_while_disconnected(
        cluster: FakeCluster, api: FakeServer, make_informer: MakeInformer) -> None:
    keep, gone = make_pod("keep", "shop"), make_pod("gone", "shop")
    cluster.add_pod(keep)
    cluster.add_pod(gone)
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: informer.healthy() and len(api.watch_requests()) == 1)
    assert uids(informer) == {uid_of(keep), uid_of(gone)}
    stale_rv = informer.resource_version
    api.down()
    cluster.delete_pod(uid_of(gone))
    new = make_pod("new", "shop")
    cluster.add_pod(new)
    cluster.compact()  # the history the agent missed is gone: a resume must answer 410
    api.up()
    assert wait_until(lambda: uids(informer) == {uid_of(keep), uid_of(new)}, timeout=10)
    # The resume from the stale resourceVersion got a 410 ERROR event, then a consistent re-LIST.
    expired = [w for w in api.watches if w.query.get("resourceVersion") == stale_rv and w.ended == "expired"]
    assert expired and expired[-1].sent == [("ERROR", 410, "")]
    relist = api.list_requests()[-1]
    assert len(api.list_requests()) == 2
    assert relist.query.get("resourceVersion", "") == ""  # not from a possibly stale cache
    assert wait_until(lambda: api.watch_requests()[-1].query["resourceVersion"] == str(api.lists_served[-1]))


def test_410_on_an_open_watch(cluster: FakeCluster, api: FakeServer, make_informer: MakeInformer) -> None:
    cluster.add_pod(make_pod("a", "shop"))
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: informer.healthy() and len(api.watch_requests()) == 1)
    b = make_pod("b", "shop")
    cluster.add_pod(b)
    assert wait_until(lambda: uid_of(b) in uids(informer))
    cluster.expire_watches()
    assert wait_until(lambda: len(api.list_requests()) == 2)
    assert api.watches[0].ended == "expired" and api.watches[0].sent[-1] == ("ERROR", 410, "")
    assert wait_until(lambda: len(api.watch_requests()) == 2)
    assert uids(informer) == node_uids(cluster)


def test_periodic_resync_relists(cluster: FakeCluster, api: FakeServer, make_informer: MakeInformer) -> None:
    cluster.add_pod(make_pod("a", "shop"))
    informer = make_informer(resync_interval=1.0)
    informer.start()
    assert wait_until(lambda: len(api.list_requests()) >= 3, timeout=6)
    # Each watch was asked to end at the resync time, and ended cleanly (timeout), not by an error.
    assert all(w.query["timeoutSeconds"] == "1" for w in api.watches)
    assert api.watches[0].ended == "timeout"
    assert informer.healthy()
    assert errors_total(informer) == 0


def errors_total(informer: InformerProvider) -> float:
    return informer._stats.total("kpod.agent.errors")


def test_token_rotation_rereads_token_file(cluster: FakeCluster, api: FakeServer, token_file: Path,
                                           make_informer: MakeInformer, stats: AgentStats,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cluster.add_pod(make_pod("a", "shop"))
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: informer.healthy() and len(api.watch_requests()) == 1)
    api.token = ROTATED_TOKEN  # the API server no longer accepts the old token
    api.drop_watches()
    assert wait_until(lambda: any(r.status == 401 for r in api.requests))
    assert wait_until(lambda: not informer.healthy())
    assert errors(stats, "auth") >= 1
    n = len(api.requests)
    token_file.write_text(ROTATED_TOKEN + "\n")  # the kubelet rotated the projected token
    b = make_pod("b", "shop")
    cluster.add_pod(b)
    assert wait_until(lambda: informer.healthy() and uid_of(b) in uids(informer))
    assert all(r.auth_ok for r in api.requests[n + 1:])
    assert any(r.auth_ok and r.status == 200 for r in api.requests[n:])
    for record in caplog.records:
        text = record.getMessage()
        assert API_TOKEN not in text and ROTATED_TOKEN not in text


def test_wrong_token_is_never_healthy(cluster: FakeCluster, api: FakeServer, token_file: Path,
                                      make_informer: MakeInformer, stats: AgentStats) -> None:
    token_file.write_text("kpt-disc-wrong-token")
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: errors(stats, "auth") >= 2)
    assert sum(r.status == 401 for r in api.requests) >= 2
    assert not informer.healthy()
    assert informer.pods() == []


def test_malformed_pod_is_skipped_and_counted(cluster: FakeCluster, api: FakeServer,
                                              make_informer: MakeInformer, stats: AgentStats) -> None:
    good = make_pod("good", "shop")
    bad = make_pod("bad", "shop")
    bad["status"]["containerStatuses"][0]["restartCount"] = "three"
    cluster.add_pod(good)
    cluster.add_pod(bad)
    informer = make_informer()
    informer.start()
    assert wait_until(informer.healthy)
    assert uids(informer) == {uid_of(good)}
    assert errors(stats, "parse") == 1
    worse = make_pod("worse", "shop")
    worse["metadata"]["labels"] = ["not", "a", "map"]
    cluster.add_pod(worse)
    later = make_pod("later", "shop")
    cluster.add_pod(later)
    assert wait_until(lambda: uid_of(later) in uids(informer))
    assert errors(stats, "parse") == 2
    assert informer.healthy()


def test_kubeconfig(cluster: FakeCluster, api: FakeServer, ca: TestCA, tmp_path: Path,
                    stats: AgentStats) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters:
- name: kpt
  cluster: {{server: "{api.url}", certificate-authority: "{ca.ca_file}"}}
users:
- name: agent
  user: {{token: "{API_TOKEN}"}}
contexts:
- name: kpt
  context: {{cluster: kpt, user: agent}}
current-context: kpt
""")
    pod = make_pod("a", "shop")
    cluster.add_pod(pod)
    client, token = ApiEndpoint(kubeconfig=str(kubeconfig)).api_client()
    assert token is None
    informer = InformerProvider(client, NODE, stats, **FAST_INFORMER)
    try:
        informer.start()
        assert wait_until(informer.healthy)
        assert uids(informer) == {uid_of(pod)}
    finally:
        informer.stop()


def test_api_server_with_untrusted_certificate_is_refused(cluster: FakeCluster, ca: TestCA, tmp_path: Path,
                                                          token_file: Path, stats: AgentStats) -> None:
    rogue_ca = TestCA(tmp_path, "kpt-disc-rogue-ca")
    rogue = FakeServer(cluster, rogue_ca.issue("kpt-disc-rogue-api"), token=API_TOKEN).up()
    try:
        cluster.add_pod(make_pod("a", "shop"))
        client, token = ApiEndpoint(host=rogue.url, ca_file=str(ca.ca_file),
                                    token_file=str(token_file)).api_client()
        informer = InformerProvider(client, NODE, stats, token=token, **FAST_INFORMER)
        informer.start()
        try:
            assert wait_until(lambda: len(rogue.tls_failures) >= 2)
            assert not informer.healthy() and informer.pods() == []
            assert rogue.requests == []  # no request (and so no token) ever reached it
            # the server records the failed handshake before the client has counted it
            assert wait_until(lambda: errors(stats, "unavailable") >= 2)
        finally:
            informer.stop()
    finally:
        rogue.down()
