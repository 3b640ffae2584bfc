"""The per-cycle pod index: namespace filters, and finished/deleted pods kept for one final cycle."""

from __future__ import annotations

from collections.abc import Callable

from kpod_otel.config import FilterConfig
from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.index import PodIndex
from kpod_otel.discovery.informer import InformerProvider
from kpod_otel.model import PodInfo
from tests.discovery.helpers import wait_until
from tests.fakes.k8s import FakeCluster, FakeServer, make_pod, uid_of

MakeInformer = Callable[..., InformerProvider]


def names(pods: list[PodInfo]) -> set[str]:
    return {p.name for p in pods}


def phase_of(informer: InformerProvider, uid: str) -> str:
    return next((p.phase for p in informer.pods() if p.uid == uid), "")


def test_namespace_filters(cluster: FakeCluster, api: FakeServer, make_informer: MakeInformer) -> None:
    for name, ns in [("web", "shop"), ("db", "data"), ("dns", "kube-system"), ("x", "kube-public"),
                     ("job", "batch")]:
        cluster.add_pod(make_pod(name, ns))
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: len(informer.pods()) == 5)
    assert names(PodIndex(informer, FilterConfig()).cycle()) == {"web", "db", "job"}  # default excludes
    assert names(PodIndex(informer, FilterConfig(namespaces=("shop", "kube-system"))).cycle()) == {"web"}
    assert names(PodIndex(informer, FilterConfig(exclude_namespaces=())).cycle()) == {
        "web", "db", "dns", "x", "job"}
    both = FilterConfig(namespaces=("data", "shop"), exclude_namespaces=("shop",))
    assert names(PodIndex(informer, both).cycle()) == {"db"}
    # A pod arriving later in an excluded namespace never shows up.
    index = PodIndex(informer, FilterConfig(exclude_namespaces=("batch",)))
    index.cycle()
    late = make_pod("late", "batch")
    cluster.add_pod(late)
    assert wait_until(lambda: any(p.uid == uid_of(late) for p in informer.pods()))
    assert "late" not in names(index.cycle())


def test_finished_and_deleted_pods_stay_one_more_cycle(cluster: FakeCluster, api: FakeServer,
                                                        make_informer: MakeInformer) -> None:
    job, web, db = make_pod("job", "shop"), make_pod("web", "shop"), make_pod("db", "shop")
    for p in (job, web, db):
        cluster.add_pod(p)
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: len(informer.pods()) == 3)
    index = PodIndex(informer, FilterConfig())
    assert names(index.cycle()) == {"job", "web", "db"}

    cluster.finish_pod(uid_of(job), "Succeeded")
    cluster.delete_pod(uid_of(web))
    assert wait_until(lambda: phase_of(informer, uid_of(job)) == "Succeeded" and len(informer.pods()) == 2)
    final = {p.name: p for p in index.cycle()}
    assert set(final) == {"job", "web", "db"}  # the final cycle of job and web
    assert final["job"].phase == "Succeeded"
    assert index.get(uid_of(web)) is not None
    assert names(index.cycle()) == {"db"}
    assert names(index.cycle()) == {"db"}  # the Succeeded pod is still listed by the API, not reported
    assert index.get(uid_of(web)) is None

    cluster.finish_pod(uid_of(db), "Failed")
    assert wait_until(lambda: phase_of(informer, uid_of(db)) == "Failed")
    assert [p.phase for p in index.cycle()] == ["Failed"]
    cluster.delete_pod(uid_of(db))  # deleted after its final cycle: nothing more
    cluster.delete_pod(uid_of(job))
    assert wait_until(lambda: informer.pods() == [])
    assert index.cycle() == []


class Scripted(PodProvider):
    """A provider whose view the test sets directly, for the index's bookkeeping edge cases."""

    mode = "scripted"

    def __init__(self) -> None:
        self.view: list[PodInfo] = []

    def start(self) -> None: ...

    def pods(self) -> list[PodInfo]:
        return list(self.view)

    def stop(self) -> None: ...


def test_index_edge_cases() -> None:
    src = Scripted()
    index = PodIndex(src, FilterConfig(exclude_namespaces=()))
    run = PodInfo(uid="u1", name="p", namespace="n", phase="Running")
    src.view = [run]
    assert index.cycle() == [run]
    # Finished and deleted between two cycles: one final cycle with the last state seen.
    src.view = []
    assert index.cycle() == [run]
    assert index.cycle() == []
    # A finished pod that starts running again (same uid) is live again, and finishes again once.
    pending = PodInfo(uid="u2", name="q", namespace="n", phase="Succeeded")
    src.view = [pending]
    assert index.cycle() == [pending]
    assert index.cycle() == []
    again = PodInfo(uid="u2", name="q", namespace="n", phase="Running")
    src.view = [again]
    assert index.cycle() == [again]
    src.view = [pending]
    assert index.cycle() == [pending]
    assert index.cycle() == []


def test_local_workloads_are_kept_apart_by_cgroup_path() -> None:
    # Local (non-Kubernetes) workloads have no uid: each is identified by its cgroup path.
    from kpod_otel.config import FilterConfig
    from kpod_otel.discovery.base import PodProvider
    from kpod_otel.discovery.index import PodIndex
    from kpod_otel.model import PodInfo

    workloads = [PodInfo(uid="", name=n, namespace="", cgroup_path=f"system.slice/{n}") for n in ("a.service",
                                                                                                  "b.service")]

    class Listing(PodProvider):
        mode = "local"

        def start(self) -> None: ...

        def stop(self) -> None: ...

        def pods(self) -> list[PodInfo]:
            return list(workloads)

    index = PodIndex(Listing(), FilterConfig(namespaces=("shop",)))
    assert sorted(p.cgroup_path for p in index.cycle()) == ["system.slice/a.service", "system.slice/b.service"]
    workloads.pop()
    assert len(index.cycle()) == 2  # b's final cycle
    assert [p.cgroup_path for p in index.cycle()] == ["system.slice/a.service"]
