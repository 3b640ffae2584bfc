"""Shared test machinery.

- `require*`: skip a test when root, BPF or a tool is missing; under CI=true such a skip is a failure.
- `host_needs*`: skip a test whose subject this host's cgroup layout does not have (a pure v2 host has no
  v1 memory controller, a pure v1 host no cgroup2). A host-kind skip is no failure under CI: it is not a
  missing privilege but another kind of machine. The pytest header names the host kind.
- Markers `root` / `bpf` / `slow` are given here, centrally (MARKS, FIXTURE_MARKS), so that
  `pytest -m "not root and not bpf and not slow"` runs unprivileged and fast. A test that calls
  require_root/require_bcc without carrying the marker fails and says so; a test that takes longer than
  SLOW_SECONDS without `slow` is listed at the end of the run.
- The session leaves the machine as it found it (tests/hoststate.py): at its end, any cgroup, network
  namespace, link, mount, BPF program, process or temporary directory the suite created and left fails the run.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import hoststate

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]
SLOW_SECONDS = 3.0

# The test being run: require_root/require_bcc check that it carries the marker its needs call for.
CURRENT_TEST: contextvars.ContextVar[pytest.Item | None] = contextvars.ContextVar("CURRENT_TEST", default=None)


# --- markers ----------------------------------------------------------------------------------------------

# Fixtures that make real kernel objects: a test using one (directly or through another fixture) needs root.
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "cgroup_tree": ("root",),  # cgroups in every hierarchy (tests/cgroup/conftest.py)
    "cgroups": ("root", "bpf"),  # v2 cgroups for the BPF collectors (tests/bpf/conftest.py)
    "bpf_env": ("root", "bpf"),  # the session's loaded BPF collectors
    "kubelet_root": ("root",),  # tmpfs mounts
    "two_pods": ("root",),  # network namespaces and a veth pair
    "private_hierarchy": ("root",),  # mounts a named cgroup v1 hierarchy
    "node": ("root", "bpf", "slow"),  # the end-to-end node (tests/e2e)
    "image_root": ("root", "slow"),  # the debootstrapped image
}

# Tests whose needs show in their bodies, not their fixtures: "path" (the whole module) or "path::test".
MARKS: dict[str, tuple[str, ...]] = {
    "tests/bpf/test_loader.py::test_kernel_slots_land_in_the_bucket_whose_bounds_contain_the_value": ("root", "bpf"),
    "tests/bpf/test_loader.py::test_cgroup_skb_kill_switch": ("root", "bpf"),
    "tests/bpf/test_units.py::test_pure_v1_node_means_no_ebpf": ("root", "bpf"),
    "tests/bpf/test_maps.py": ("root", "bpf"),
    "tests/test_assembly.py": ("root", "bpf"),
    "tests/test_check.py::test_check_and_run_agree_when_bcc_tracefs_or_a_capability_is_missing":
        ("root", "bpf", "slow"),
    "tests/test_e2e_discovery.py": ("root",),
    "tests/cgroup/test_wiring_real.py::test_memory_files_serve_only_what_ebpf_cannot_see": ("root", "bpf"),
    "tests/reliability/test_churn_soak.py": ("root", "bpf", "slow"),
    "tests/reliability/test_kernel_faults.py": ("root", "bpf"),
    "tests/reliability/test_least_privilege.py::test_no_writes_no_global_changes_no_secrets_in_logs":
        ("root", "bpf", "slow"),
    "tests/reliability/test_least_privilege.py::test_bpf_stats_only_while_configured": ("root", "bpf", "slow"),
    "tests/reliability/test_shutdown.py": ("root", "bpf", "slow"),
    # slow only (seconds of real timeouts and retries)
    "tests/reliability/test_collector_outage.py": ("slow",),
    "tests/test_agent_run.py::test_sigterm_during_a_hanging_export_ends_quickly_with_a_final_attempt": ("slow",),
    "tests/reliability/test_discovery_faults.py::test_slow_list_times_out_is_counted_and_recovers": ("slow",),
    "tests/discovery/test_informer.py::test_periodic_resync_relists": ("slow",),
    "tests/discovery/test_auto.py::test_falls_back_to_kubelet_and_returns": ("slow",),
}


def marks_of(item: pytest.Item) -> set[str]:
    nodeid = item.nodeid
    names: set[str] = set()
    for key, marks in MARKS.items():
        if nodeid == key or nodeid.startswith((key + "::", key + "[")):
            names.update(marks)
    for fixture in getattr(item, "fixturenames", ()):
        names.update(FIXTURE_MARKS.get(fixture, ()))
    return names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in sorted(marks_of(item)):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    token = CURRENT_TEST.set(item)
    try:
        return (yield)
    finally:
        CURRENT_TEST.reset(token)


def check_marked(marker: str) -> None:
    item = CURRENT_TEST.get()
    if item is not None and item.get_closest_marker(marker) is None:
        pytest.fail(f"{item.nodeid} needs {marker} but is not marked `{marker}`: add it to MARKS or "
                    "FIXTURE_MARKS in tests/conftest.py, or give the module a pytestmark", pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    unmarked = []
    for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed"):
        if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
            unmarked.append(f"{report.duration:.1f}s {report.nodeid}")
    if unmarked:
        terminalreporter.write_sep("=", f"slower than {SLOW_SECONDS:.0f} s and not marked slow")
        for line in unmarked:
            terminalreporter.write_line(line)


# --- machine capabilities: a missing one skips (fails under CI) -------------------------------------------


def require(condition: bool, reason: str) -> None:
    """Skip (or, in CI, fail) when a machine capability the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    check_marked("root")
    require(os.geteuid() == 0, "needs root (cgroups, namespaces, mounts, BPF)")


def require_bcc() -> None:
    require_root()
    check_marked("bpf")
    try:
        import bcc  # noqa: F401
    except ImportError:
        require(False, "needs bcc (Debian python3-bpfcc, linked into the venv by scripts/setup.sh)")


# --- the host's kind of cgroups: what it lacks is skipped, also under CI -----------------------------------


@dataclass(frozen=True)
class CgroupHost:
    """This host's cgroup layout under /sys/fs/cgroup, from /proc/self/mountinfo."""

    v2_dir: str | None  # the cgroup2 hierarchy: /sys/fs/cgroup (pure v2) or /sys/fs/cgroup/unified (hybrid)
    v1: frozenset[str]  # mounted v1 hierarchies by directory name (memory, blkio, cpu, pids, systemd, …)

    @property
    def kind(self) -> str:
        if self.v1 and self.v2_dir:
            return "hybrid"
        if self.v2_dir:
            return "v2"
        return "v1" if self.v1 else "none"

    def describe(self) -> str:
        v1 = f"v1 {','.join(sorted(self.v1))}" if self.v1 else "no v1"
        return f"{self.kind} ({v1}; cgroup2 at {self.v2_dir or 'none'})"


def cgroup_host() -> CgroupHost:
    root = hoststate.CGROUP_ROOT
    v2_dir, v1 = None, set()
    for m in hoststate.mounts():
        if m.fs_type == "cgroup2" and m.point in (root, f"{root}/unified"):
            v2_dir = m.point
        elif m.fs_type == "cgroup" and os.path.dirname(m.point) == root:
            v1.add(os.path.basename(m.point))
    # v1 hierarchies mounted under a co-mounted name (cpu,cpuacct) are also reached by their symlinks
    for name in hoststate.listdir(root):
        link = os.path.join(root, name)
        if os.path.islink(link) and os.path.basename(os.readlink(link)) in v1:
            v1.add(name)
    return CgroupHost(v2_dir, frozenset(v1))


HOST = cgroup_host()


def host_needs(condition: bool, reason: str) -> None:
    """Skip, also under CI, a test of something this kind of host does not have."""
    if not condition:
        pytest.skip(f"host is cgroup {HOST.describe()}: {reason}")


def host_needs_v1(*hierarchies: str) -> None:
    missing = [h for h in hierarchies if h not in HOST.v1]
    host_needs(not missing, f"needs the v1 hierarchies {', '.join(missing)}")


def host_needs_v2() -> str:
    """The cgroup2 hierarchy's directory, or a skip on a pure v1 host."""
    host_needs(HOST.v2_dir is not None, "needs a cgroup2 hierarchy")
    assert HOST.v2_dir is not None
    return HOST.v2_dir


def pytest_report_header() -> str:
    return f"cgroup host kind: {HOST.describe()}; CI={IN_CI}; euid={os.geteuid()}"


# --- the session leaves the machine as it found it --------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def machine_left_as_found() -> Iterator[None]:
    """First set up, last torn down: every other fixture has cleaned up when the leak check runs."""
    os.environ[hoststate.SESSION_ENV] = str(os.getpid())  # inherited by every process the tests start
    before = hoststate.take()
    yield
    leaked = hoststate.settled_leaks(before, os.getpid(), str(REPO))
    if leaked:
        pytest.fail("the test session left behind what it created:\n  " + "\n  ".join(leaked), pytrace=False)
