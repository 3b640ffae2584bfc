"""Fixtures for discovery tests: a test CA, the fake API server and kubelet, token files, providers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kpod_otel.discovery.credentials import ApiEndpoint, KubeletEndpoint
from kpod_otel.discovery.informer import InformerProvider
from kpod_otel.discovery.kubelet import KubeletProvider
from kpod_otel.selfmetrics import AgentStats
from tests.discovery.helpers import API_TOKEN, FAST_INFORMER
from tests.fakes.k8s import NODE, FakeCluster, FakeServer
from tests.fakes.tls import TestCA


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path, "kpt-disc-cluster-ca")


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(API_TOKEN + "\n")
    return path


@pytest.fixture
def api(cluster: FakeCluster, ca: TestCA) -> Iterator[FakeServer]:
    server = FakeServer(cluster, ca.issue("kpt-disc-apiserver"), token=API_TOKEN, role="api").up()
    yield server
    server.down()


@pytest.fixture
def kubelet_server(cluster: FakeCluster, ca: TestCA) -> Iterator[FakeServer]:
    server = FakeServer(cluster, ca.issue("kpt-disc-kubelet"), token=API_TOKEN, role="kubelet",
                        node=NODE).up()
    yield server
    server.down()


@pytest.fixture
def stats() -> AgentStats:
    return AgentStats()


@pytest.fixture
def make_informer(api: FakeServer, ca: TestCA, token_file: Path,
                  stats: AgentStats) -> Iterator[Callable[..., InformerProvider]]:
    made: list[InformerProvider] = []

    def make(**kw: Any) -> InformerProvider:
        client, token = ApiEndpoint(host=api.url, ca_file=str(ca.ca_file),
                                    token_file=str(token_file)).api_client()
        opts = {**FAST_INFORMER, "resync_interval": 300.0, **kw}
        informer = InformerProvider(client, NODE, stats, token=token, **opts)
        made.append(informer)
        return informer

    yield make
    for informer in made:
        informer.stop()


@pytest.fixture
def make_kubelet(kubelet_server: FakeServer, ca: TestCA, token_file: Path,
                 stats: AgentStats) -> Iterator[Callable[..., KubeletProvider]]:
    made: list[KubeletProvider] = []

    def make(*, ca_file: str | None = None, insecure_skip_verify: bool = False, host: str = "",
             **kw: Any) -> KubeletProvider:
        endpoint = KubeletEndpoint(host=host or kubelet_server.url,
                                   ca_file=str(ca.ca_file) if ca_file is None else ca_file,
                                   token_file=str(token_file), insecure_skip_verify=insecure_skip_verify)
        client, token = endpoint.api_client()
        opts = {"poll_interval": 0.2, "timeout": 2.0, **kw}
        provider = KubeletProvider(client, stats, token=token, **opts)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.stop()
