"""CgroupFiles on this machine's real cgroups: the typed reads give v2 meanings whatever hierarchy holds the
file (here hybrid: v1 cpu,cpuacct answer, the controller-less cgroup2 hierarchy is the independent check)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from kpod_otel.cgroup.files import CgroupFiles
from kpod_otel.cgroup.fs import CgroupFS
from kpod_otel.cgroup.parsers import parse_cpu_stat
from kpod_otel.cgroup.problems import ProblemLog
from kpod_otel.selfmetrics import AgentStats
from tests.cgroup.conftest import CGROUP_ROOT, PYTHON, CgroupTree, systemd_burstable_pod

SPIN = """
import time
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("spun", flush=True)
time.sleep(300)
"""


def ran_usec(pid: int) -> int:
    """Time the task has run on a CPU, from the scheduler's own statistics."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) // 1000


def test_cpu_stat_is_cpu_time_and_throttling(cgroup_tree: CgroupTree) -> None:
    pod = systemd_burstable_pod(cgroup_tree)
    cpu_dir = os.path.join(CGROUP_ROOT, "cpu", pod.container_path)
    Path(cpu_dir, "cpu.cfs_period_us").write_text("100000")
    Path(cpu_dir, "cpu.cfs_quota_us").write_text("50000")  # half a CPU: 0.3 s of spinning is throttled
    proc = cgroup_tree.spawn(pod.container_path, [PYTHON, "-c", SPIN], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"spun\n"
    stats = AgentStats()
    files = CgroupFiles(CgroupFS.detect(CGROUP_ROOT), ProblemLog("cpu", stats, logging.getLogger(__name__)))

    before = ran_usec(proc.pid)
    stat = files.cpu_stat(pod.uid, pod.container_path)
    after = ran_usec(proc.pid)
    v2 = parse_cpu_stat(Path(CGROUP_ROOT, "unified", pod.container_path, "cpu.stat").read_text())

    assert stat is not None and stat.usage_usec is not None and v2.usage_usec is not None
    assert before >= 300_000
    # the process is all the cgroup ran (it joined before exec); a few ms of fork before joining differ
    assert before - 5_000 <= stat.usage_usec <= after + 5_000
    assert abs(stat.usage_usec - v2.usage_usec) <= 5_000  # v1 cpuacct.usage means v2's usage_usec
    assert stat.nr_periods is not None and stat.nr_throttled is not None and stat.throttled_usec is not None
    assert stat.nr_periods >= stat.nr_throttled > 0 and stat.throttled_usec > 0
    assert stats.total("kpod.agent.errors") == 0


def test_a_vanished_cgroup_is_counted_not_raised(cgroup_tree: CgroupTree) -> None:
    stats = AgentStats()
    files = CgroupFiles(CgroupFS.detect(CGROUP_ROOT), ProblemLog("memory", stats, logging.getLogger(__name__)))
    gone = "kubepods.slice/kpt-cg-never-created.slice"
    assert files.memory_events("k", gone) is None and files.memory_stat("k", gone) is None
    assert files.cpu_stat("k", gone) is None and files.io("k", gone) is None
    assert stats.get("kpod.agent.errors", **{"kpod.component": "memory", "error.type": "vanished"}) == 4
