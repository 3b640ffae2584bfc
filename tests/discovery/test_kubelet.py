"""Kubelet mode against the fake kubelet's /pods over real HTTPS."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from kpod_otel.discovery.kubelet import KubeletError, KubeletProvider
from kpod_otel.selfmetrics import AgentStats
from tests.discovery.helpers import API_TOKEN, ROTATED_TOKEN, wait_until
from tests.fakes.k8s import OTHER_NODE, FakeCluster, FakeServer, make_pod, uid_of
from tests.fakes.tls import TestCA

MakeKubelet = Callable[..., KubeletProvider]


def errors(stats: AgentStats, kind: str) -> float:
    return stats.get("kpod.agent.errors", **{"kpod.component": "discovery", "error.type": kind})


def test_polls_and_reconciles(cluster: FakeCluster, kubelet_server: FakeServer, make_kubelet: MakeKubelet,
                              stats: AgentStats) -> None:
    a, b = make_pod("a", "shop", containers=("app", "proxy")), make_pod("b", "shop")
    for p in (a, b, make_pod("c", "shop", node=OTHER_NODE)):
        cluster.add_pod(p)
    kubelet = make_kubelet()
    kubelet.start()
    assert wait_until(kubelet.healthy)
    assert {p.uid for p in kubelet.pods()} == {uid_of(a), uid_of(b)}
    pod_a = next(p for p in kubelet.pods() if p.uid == uid_of(a))
    assert [c.name for c in pod_a.containers] == ["app", "proxy"]
    first = kubelet_server.requests[0]
    assert (first.path, first.auth_ok) == ("/pods", True)
    cluster.delete_pod(uid_of(a))
    new = make_pod("new", "shop")
    cluster.add_pod(new)
    assert wait_until(lambda: {p.uid for p in kubelet.pods()} == {uid_of(b), uid_of(new)})
    assert stats.total("kpod.agent.errors") == 0


def test_wrong_ca_is_refused(cluster: FakeCluster, kubelet_server: FakeServer, make_kubelet: MakeKubelet,
                             tmp_path: Path, stats: AgentStats) -> None:
    cluster.add_pod(make_pod("a", "shop"))
    other_ca = TestCA(tmp_path, "kpt-disc-other-ca")
    kubelet = make_kubelet(ca_file=str(other_ca.ca_file))
    with pytest.raises(KubeletError, match=r"SSL|certificate"):
        kubelet.poll_once()
    kubelet.start()
    assert wait_until(lambda: errors(stats, "kubelet") >= 3)
    assert not kubelet.healthy() and kubelet.pods() == []
    assert kubelet_server.requests == []  # the token never left the agent
    assert len(kubelet_server.tls_failures) >= 3


def test_skip_verify_only_when_configured(cluster: FakeCluster, kubelet_server: FakeServer,
                                          make_kubelet: MakeKubelet, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    cluster.add_pod(make_pod("a", "shop"))
    # A kubelet with a self-signed serving certificate nobody configured a CA for.
    self_signed = TestCA(tmp_path, "kpt-disc-kubelet-self")
    lone = FakeServer(cluster, self_signed.issue("kpt-disc-lone-kubelet"), token=API_TOKEN,
                      role="kubelet").up()
    try:
        for ca_file in (None, ""):  # the configured (cluster) CA, or the system's CAs
            verify_default = make_kubelet(host=lone.url, ca_file=ca_file)
            with pytest.raises(KubeletError, match="CERTIFICATE_VERIFY_FAILED"):
                verify_default.poll_once()
        assert lone.requests == []
        with caplog.at_level(logging.WARNING):
            insecure = make_kubelet(host=lone.url, insecure_skip_verify=True)
        assert any("verification is DISABLED" in r.getMessage() for r in caplog.records)
        assert [p.name for p in insecure.poll_once()] == ["a"]
        assert lone.requests[-1].auth_ok
    finally:
        lone.down()


def test_response_size_cap(cluster: FakeCluster, kubelet_server: FakeServer, make_kubelet: MakeKubelet,
                           stats: AgentStats) -> None:
    for i in range(5):
        cluster.add_pod(make_pod(f"p{i}", "shop"))
    with pytest.raises(KubeletError, match="cap"):
        make_kubelet(max_response_bytes=4096).poll_once()  # Content-Length announces too much
    kubelet_server.kubelet_chunked = True  # no Content-Length: the cap applies while reading
    with pytest.raises(KubeletError, match="cap"):
        make_kubelet(max_response_bytes=4096).poll_once()
    assert errors(stats, "too_large") == 2
    assert len(make_kubelet(max_response_bytes=1 << 20).poll_once()) == 5


def test_token_rotation(cluster: FakeCluster, kubelet_server: FakeServer, make_kubelet: MakeKubelet,
                        token_file: Path, stats: AgentStats, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cluster.add_pod(make_pod("a", "shop"))
    kubelet = make_kubelet()
    kubelet.start()
    assert wait_until(kubelet.healthy)
    kubelet_server.token = ROTATED_TOKEN
    assert wait_until(lambda: not kubelet.healthy())
    assert kubelet_server.requests[-1].status == 401
    assert errors(stats, "auth") >= 1
    token_file.write_text(ROTATED_TOKEN)
    assert wait_until(kubelet.healthy)
    assert kubelet_server.requests[-1].auth_ok and kubelet_server.requests[-1].status == 200
    for record in caplog.records:
        assert API_TOKEN not in record.getMessage() and ROTATED_TOKEN not in record.getMessage()


def test_kubelet_down_then_back(cluster: FakeCluster, kubelet_server: FakeServer,
                                make_kubelet: MakeKubelet) -> None:
    a = make_pod("a", "shop")
    cluster.add_pod(a)
    kubelet = make_kubelet()
    kubelet.start()
    assert wait_until(kubelet.healthy)
    kubelet_server.down()
    assert wait_until(lambda: not kubelet.healthy())
    assert [p.uid for p in kubelet.pods()] == [uid_of(a)]  # the last view stays while it is away
    b = make_pod("b", "shop")
    cluster.add_pod(b)
    kubelet_server.up()
    assert wait_until(lambda: kubelet.healthy() and len(kubelet.pods()) == 2)
