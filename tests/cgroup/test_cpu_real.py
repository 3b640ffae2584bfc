"""CpuCollector (its cgroup files) on real cgroups: a CPU burner under a CFS quota, compared with the cgroup's own files
and with the CPU time the kernel reports for the burner process itself (wait4's rusage).

Two code paths, both live on this hybrid machine: a container that exists in the v2 tree (CPU time from
the v2 `cpu.stat`, as on v2 nodes) and one that exists only in the v1 hierarchies (`cpuacct.usage_*`)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.mapper import PodCgroupMapper
from kpod_otel.cgroup.parsers import parse_cpu_stat, parse_single_value
from kpod_otel.collector import Observation
from kpod_otel.collectors.cpu import (
    CPU_LIMIT,
    CPU_TIME,
    PERIODS,
    THROTTLED_PERIODS,
    THROTTLED_TIME,
    CpuCollector,
)
from kpod_otel.model import ContainerInfo, PodInfo, Target
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import (
    CGROUP_ROOT,
    PYTHON,
    CgroupTree,
    random_container_id,
    random_uid,
)

PERIOD_US = 100_000
QUOTA_US = 20_000  # 0.2 CPU
BURN_S = 1.5
V1_ONLY = ("memory", "blkio", "cpu", "cpuacct", "pids")  # not in the v2 tree

BURN = f"""
import time
t = time.monotonic()
while time.monotonic() - t < {BURN_S}:
    pass
"""


def make_pod(tree: CgroupTree, hierarchies: Sequence[str] | None = None) -> tuple[str, str, str, str]:
    """A Burstable systemd pod with two containers; returns (uid, limited cid, its path, free cid)."""
    uid = random_uid()
    pod = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice"
    limited, free = random_container_id(), random_container_id()
    kwargs = {} if hierarchies is None else {"hierarchies": hierarchies}
    tree.make(pod, **kwargs)  # type: ignore[arg-type]
    path = tree.make(f"{pod}/cri-containerd-{limited}.scope", **kwargs)  # type: ignore[arg-type]
    tree.make(f"{pod}/cri-containerd-{free}.scope", **kwargs)  # type: ignore[arg-type]
    return uid, limited, path, free


def targets_for(fs: CgroupFS, stats: AgentStats, uid: str, limited: str, free: str) -> list[Target]:
    return PodCgroupMapper(fs, stats).map([PodInfo(
        uid=uid, name="burn-0", namespace="t", qos_class="Burstable",
        containers=(ContainerInfo("burner", limited, "containerd"), ContainerInfo("idle", free, "containerd")))])


def by_container(points: dict[str, list[Observation]], metric: str, cid: str) -> dict[str, float]:
    return {str(o.attributes.get("cpu.mode", "")): float(o.value) for o in points.get(metric, [])
            if o.attributes["container.id"] == cid}


def burn(tree: CgroupTree, path: str, hierarchies: Sequence[str]) -> tuple[float, float, float]:
    """Run the burner in `path`; (its user s, its system s, wall s) as wait4 reports them."""
    t0 = time.monotonic()
    proc = tree.spawn(path, [PYTHON, "-c", BURN], hierarchies)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return usage.ru_utime, usage.ru_stime, time.monotonic() - t0


def set_quota(path: str) -> None:
    cpu = Path(CGROUP_ROOT, "cpu", path)
    (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (cpu / "cpu.cfs_quota_us").write_text(str(QUOTA_US))


def check_throttling(points: dict[str, list[Observation]], cid: str, path: str, wall: float,
                     cpu_s: float) -> None:
    stat = parse_cpu_stat(Path(CGROUP_ROOT, "cpu", path, "cpu.stat").read_text())  # v1 cpu controller
    assert stat.nr_periods is not None and stat.nr_throttled is not None
    assert by_container(points, PERIODS, cid) == {"": stat.nr_periods}
    assert by_container(points, THROTTLED_PERIODS, cid) == {"": stat.nr_throttled}
    assert by_container(points, THROTTLED_TIME, cid) == {"": stat.values["throttled_time"] // 1000 / 1e6}
    # the quota held: 0.2 CPU over the burner's life (plus one period of slack), a period every 100 ms
    # in which it ran, and throttled in nearly all of them
    assert cpu_s <= QUOTA_US / PERIOD_US * wall + PERIOD_US / 1e6
    assert 0.6 * wall / (PERIOD_US / 1e6) <= stat.nr_periods <= wall / (PERIOD_US / 1e6) + 2
    assert stat.nr_throttled >= 0.8 * stat.nr_periods
    # throttled for the rest of each period (~80 ms of 100): at least half of the time it did not run
    assert stat.values["throttled_time"] / 1e9 >= 0.5 * (wall - cpu_s)
    assert by_container(points, CPU_LIMIT, cid) == {"": QUOTA_US / PERIOD_US}


def test_burner_under_quota_v2_tree(cgroup_tree: CgroupTree) -> None:
    uid, limited, path, free = make_pod(cgroup_tree)
    set_quota(path)
    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    targets = targets_for(fs, stats, uid, limited, free)
    assert all(c.cgroup_id is not None for c in targets[0].containers)
    collector = CpuCollector(fs, stats)
    before = collector.collect(targets).points[uid]
    assert by_container(before, CPU_TIME, limited) == {"user": 0.0, "system": 0.0}

    user, system, wall = burn(cgroup_tree, path, [*V1_ONLY, "unified"])
    points = collector.collect(targets).points[uid]

    # the v2 tree's cpu.stat: exact to the µs, and it is what was reported
    v2 = parse_cpu_stat(Path(CGROUP_ROOT, "unified", path, "cpu.stat").read_text())
    assert v2.user_usec is not None and v2.system_usec is not None and v2.usage_usec is not None
    reported = by_container(points, CPU_TIME, limited)
    assert reported == {"user": v2.user_usec / 1e6, "system": v2.system_usec / 1e6}
    # the same time as the scheduler's total in v1 cpuacct, and as the burner's own rusage: only the
    # fork before it joined the cgroup is outside (a few ms)
    cpuacct = parse_single_value(Path(CGROUP_ROOT, "cpuacct", path, "cpuacct.usage").read_text()).value
    assert cpuacct is not None and abs(v2.usage_usec - cpuacct // 1000) <= 1
    total = reported["user"] + reported["system"]
    assert abs(total - (user + system)) <= 0.02
    assert abs(reported["user"] - user) <= 0.03 and abs(reported["system"] - system) <= 0.03
    assert total >= 0.2  # it did burn
    check_throttling(points, limited, path, wall, total)

    # the idle container: no time; no CPU limit, so no limit point and no throttling series
    assert by_container(points, CPU_TIME, free) == {"user": 0.0, "system": 0.0}
    assert all(by_container(points, m, free) == {} for m in (CPU_LIMIT, PERIODS, THROTTLED_PERIODS, THROTTLED_TIME))
    assert stats.total("kpod.agent.errors") == 0


def test_burner_under_quota_v1_only(cgroup_tree: CgroupTree) -> None:
    uid, limited, path, free = make_pod(cgroup_tree, V1_ONLY)
    set_quota(path)
    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    targets = targets_for(fs, stats, uid, limited, free)
    assert all(c.cgroup_id is None for c in targets[0].containers)  # no v2 directory: cpuacct it is
    collector = CpuCollector(fs, stats)

    user, system, wall = burn(cgroup_tree, path, V1_ONLY)
    points = collector.collect(targets).points[uid]

    cpuacct = Path(CGROUP_ROOT, "cpuacct", path)
    ns = {m: parse_single_value((cpuacct / f"cpuacct.usage_{f}").read_text()).value
          for m, f in (("user", "user"), ("system", "sys"))}
    reported = by_container(points, CPU_TIME, limited)
    assert reported == {m: v // 1000 / 1e6 for m, v in ns.items() if v is not None}
    # cpuacct's split is sampled at scheduler ticks (4 ms at HZ=250): the total agrees with the burner's
    # rusage to a few ticks, the exact total (cpuacct.usage) to the same
    exact = parse_single_value((cpuacct / "cpuacct.usage").read_text()).value
    assert exact is not None
    total = reported["user"] + reported["system"]
    tolerance = 0.05 + 0.05 * (user + system)
    assert abs(total - (user + system)) <= tolerance and abs(total - exact / 1e9) <= tolerance
    assert total >= 0.2
    check_throttling(points, limited, path, wall, exact / 1e9)
    assert stats.total("kpod.agent.errors") == 0


def test_own_rusage_is_what_the_kernel_counts(cgroup_tree: CgroupTree) -> None:
    """The burner's self-measured CPU time (getrusage in the process) agrees with the cgroup's."""
    uid, limited, path, free = make_pod(cgroup_tree)
    fs = CgroupFS.detect(CGROUP_ROOT)
    stats = AgentStats()
    targets = targets_for(fs, stats, uid, limited, free)
    code = BURN.replace(str(BURN_S), "0.5") + (
        "import resource\nr = resource.getrusage(resource.RUSAGE_SELF)\nprint(r.ru_utime + r.ru_stime)\n")
    proc = cgroup_tree.spawn(path, [PYTHON, "-c", code], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=30)
    own = float(out)
    reported = by_container(CpuCollector(fs, stats).collect(targets).points[uid], CPU_TIME, limited)
    total = reported["user"] + reported["system"]
    # the cgroup also saw the interpreter's exit after the burner measured itself (a few ms)
    assert own - 0.005 <= total <= own + 0.03
