"""The console table: a CPU% column from two cycles of kpod.cpu.time, and the memory working set."""

from __future__ import annotations

from kpod_otel.catalog import CATALOG
from kpod_otel.console import TableRenderer
from kpod_otel.export.pipeline import CycleResult
from kpod_otel.points import NumberPoints, TargetPoints

START_NS = 1_000_000_000


def cycle(user_s: float, system_s: float, working_set: int, delta: bool = False) -> CycleResult:
    cpu = NumberPoints(CATALOG["kpod.cpu.time"].spec, delta=delta)
    for mode, seconds in (("user", user_s), ("system", system_s)):
        cpu.add((("cpu.mode", mode),), START_NS, seconds)
    ws = NumberPoints(CATALOG["kpod.mem.working_set"].spec)
    ws.add((), 0, working_set)
    target = TargetPoints("u-1", {"k8s.pod.uid": "u-1", "k8s.pod.name": "web-0", "k8s.namespace.name": "shop"},
                          {"kpod.cpu.time": cpu, "kpod.mem.working_set": ws})
    return CycleResult(time_ns=0, targets=[target], collect_seconds=0.0)


def test_cpu_percent_and_working_set() -> None:
    renderer = TableRenderer(lambda _: None)
    first = renderer.render(cycle(10.0, 2.0, 50_000_000), at=100.0).splitlines()
    assert first[0].split()[:4] == ["TARGET", "CPU", "%", "mem"]
    assert first[1].split()[:3] == ["shop/web-0", "-", "50.0M"]  # no CPU% before a second cycle
    # 15 s later the container used 3 s of user and 0.75 s of system time: 25% of a CPU
    second = renderer.render(cycle(13.0, 2.75, 60_000_000), at=115.0).splitlines()
    assert second[1].split()[:3] == ["shop/web-0", "25", "60.0M"]


def test_cpu_percent_under_delta_temporality() -> None:
    renderer = TableRenderer(lambda _: None)
    first = renderer.render(cycle(10.0, 2.0, 50_000_000, delta=True), at=100.0).splitlines()
    assert first[1].split()[:3] == ["shop/web-0", "-", "50.0M"]
    # the points are the interval's counts: 6 s of CPU time over 15 s is 40% of a CPU
    second = renderer.render(cycle(4.5, 1.5, 50_000_000, delta=True), at=115.0).splitlines()
    assert second[1].split()[:3] == ["shop/web-0", "40", "50.0M"]
