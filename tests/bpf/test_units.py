"""Pure parts of the eBPF layer (no kernel needed), and map cleanup of removed cgroups (kernel)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from kpod_otel.assembly import build_collectors, cgroup_fs
from kpod_otel.bpf.attribution import group_counters, group_histograms, owners_by_cgroup
from kpod_otel.bpf.cgroupv2 import find_cgroup2_root, find_pods_cgroup, pods_only_in_v1
from kpod_otel.bpf.collector import BpfCollector
from kpod_otel.bpf.fdinfo import ProgRunStats, parse_prog_fdinfo
from kpod_otel.bpf.histogram import BOUNDS_SECONDS, SLOTS, RawHistogram, to_point
from kpod_otel.bpf.kernel import (
    KERNEL_BPF_CMPXCHG,
    NET_CLS_FALLBACK,
    NO_V2_POD_CGROUPS,
    kernel_version,
    node_limitations,
    too_old,
)
from kpod_otel.bpf.program import ProgramSpec, defines
from kpod_otel.bpf.tracefs import TracepointNeed, check_tracepoint, parse_format_fields
from kpod_otel.cgroup.fs import CgroupLayout, CgroupVersion
from kpod_otel.collectors.cpu_sched import CONTEXT_SWITCHES, CpuSchedCollector
from kpod_otel.collectors.cpu_sched import SPEC as CPU_SPEC
from kpod_otel.collectors.mem_bpf import SPEC as MEM_SPEC
from kpod_otel.collectors.syscall import syscall_spec
from kpod_otel.collectors.tcp import tcp_spec
from kpod_otel.config import CgroupConfig, Config
from kpod_otel.model import ContainerTarget, Target
from kpod_otel.selfmetrics import AgentStats
from tests.bpf.conftest import CgroupFactory, Workload, bpf_env_of, target_for
from tests.conftest import require_bcc

SCHED_SWITCH_FORMAT = """name: sched_switch
ID: 318
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] path;\toffset:60;\tsize:4;\tsigned:0;

print fmt: "prev_comm=%s prev_pid=%d", REC->prev_comm, REC->prev_pid
"""


def test_parse_format_fields() -> None:
    fields = parse_format_fields(SCHED_SWITCH_FORMAT)
    assert fields["prev_comm"] == "char prev_comm[16]"
    assert fields["prev_state"] == "long prev_state"
    assert fields["path"] == "__data_loc char[] path"
    assert "common_pid" in fields and "print" not in fields


def test_check_tracepoint(tmp_path: Path) -> None:
    d = tmp_path / "events" / "sched" / "sched_switch"
    d.mkdir(parents=True)
    (d / "format").write_text(SCHED_SWITCH_FORMAT)
    assert check_tracepoint(tmp_path, TracepointNeed("sched", "sched_switch", ("prev_pid", "next_pid"))) == ""
    assert "lacks field(s) next_prio" in check_tracepoint(
        tmp_path, TracepointNeed("sched", "sched_switch", ("next_prio",)))
    assert "does not exist" in check_tracepoint(tmp_path, TracepointNeed("oom", "mark_victim"))


def test_parse_prog_fdinfo() -> None:
    text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nrun_time_ns:\t123456\nrun_cnt:\t42\n"
    assert parse_prog_fdinfo(text) == ProgRunStats(123456, 42)
    assert parse_prog_fdinfo("pos:\t0\nprog_type:\t5\n") is None
    assert parse_prog_fdinfo("run_time_ns:\tx\nrun_cnt:\t1\n") is None
    assert parse_prog_fdinfo(text + "recursion_misses:\t7\n") == ProgRunStats(123456, 42, 7)


def test_recursion_misses_of_a_live_program_match_bpftool(cpu_collector: CpuSchedCollector) -> None:
    """The real fdinfo of a loaded program, against bpftool's view of the same program id."""
    import json
    import subprocess

    for fn in cpu_collector._program.bpf.funcs.values():
        text = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        parsed = parse_prog_fdinfo(text)
        assert parsed is not None
        prog_id = int(next(line.split()[1] for line in text.splitlines() if line.startswith("prog_id:")))
        shown = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                                          capture_output=True, text=True, check=True).stdout)
        # read after ours: the kernel's count can only have grown meanwhile
        assert parsed.recursion_misses <= shown.get("recursion_misses", 0) <= parsed.recursion_misses + 50


def test_find_cgroup2_root(tmp_path: Path) -> None:
    assert find_cgroup2_root(tmp_path) is None
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    assert find_cgroup2_root(tmp_path) == tmp_path / "unified"  # hybrid
    (tmp_path / "cgroup.controllers").write_text("cpu io memory\n")
    assert find_cgroup2_root(tmp_path) == tmp_path  # pure v2


def test_attribution_containers_sandbox_and_sums() -> None:
    pod = Target(
        key="uid-1", resource={}, cgroup_id=10, sandbox_cgroup_ids=(11,),
        containers=(ContainerTarget("app", "c1", "p/c1", 12), ContainerTarget("side", "c2", "p/c2", None)),
    )
    owners = owners_by_cgroup([pod])
    assert owners[12].attrs() == {"container.id": "c1", "k8s.container.name": "app"}
    assert owners[10] == owners[11] and owners[10].attrs() == {}
    grouped = group_counters({10: (1, 2), 11: (10, 20), 12: (5, 0), 99: (7, 7)}, owners)
    assert grouped == {owners[10]: (11, 22), owners[12]: (5, 0)}  # sandbox cgroups summed; 99 unknown
    h = RawHistogram(tuple([0, 1] + [0] * (SLOTS - 2)), 1, 1)
    assert group_histograms({10: h, 11: h}, owners)[owners[10]] == RawHistogram(
        tuple([0, 2] + [0] * (SLOTS - 2)), 2, 2)


def test_histogram_point_shape() -> None:
    slots = [0] * SLOTS
    slots[1], slots[20], slots[SLOTS - 1] = 2, 3, 1
    p = to_point("m", {"a": 1}, RawHistogram(tuple(slots), 300_000_000_000, 6))
    assert len(p.bucket_counts) == len(p.bounds) + 1 == len(BOUNDS_SECONDS) + 1
    assert p.bucket_counts[0] == 2 and p.bucket_counts[19] == 3 and p.bucket_counts[-1] == 1
    assert p.bounds[0] == 1e-9 and p.bounds[19] == (2**20 - 1) / 1e9
    assert p.sum == 300.0 and p.count == 6


def test_removed_cgroups_are_read_once_more_then_leave_the_maps(cpu_collector: CpuSchedCollector,
                                                               cgroups: CgroupFactory) -> None:
    a = cgroups.make("gone")
    t = target_for("a", a)
    w = Workload("os.getpid()")
    try:
        a.add(w.pid)
        w.run()
        before = cpu_collector.collect([t]).points[t.key][CONTEXT_SWITCHES]  # the cgroup has entries
        w.run()  # more switches after that read...
    finally:
        w.stop()
    gone_id = a.id
    table = cpu_collector._program.table("ctx_switches")
    a.remove()  # ...then the cgroup goes: the hook only notes its id
    assert any(int(k.value) == gone_id for k in table)
    # The next cycle still exports its final value (the events since the last read are not lost)...
    after = cpu_collector.collect([t]).points[t.key][CONTEXT_SWITCHES]
    assert sum(o.value for o in after) > sum(o.value for o in before)
    # ...and deletes its entries once read.
    assert not any(int(k.value) == gone_id for k in table)
    assert not any(int(k.value) == gone_id for k in cpu_collector._program.table("removed_cgroups"))
    assert t.key not in cpu_collector.collect([t]).points
    # An entry the tracepoint missed (e.g. written while the agent was down) goes at the next sweep;
    # the entry of a live cgroup stays.
    live = cgroups.make("live")
    lat = cpu_collector._program.table("runq_latency")
    lat[lat.Key(gone_id)] = lat.Leaf()
    lat[lat.Key(live.id)] = lat.Leaf()
    assert cpu_collector.sweep({"runq_latency": {gone_id, live.id}}) == 1
    keys = {int(k.value) for k in lat}
    assert gone_id not in keys and live.id in keys


def test_pure_v1_node_means_no_ebpf(tmp_path: Path) -> None:
    """No cgroup2 hierarchy under the configured root: eBPF is off with a clear reason."""
    require_bcc()
    (tmp_path / "memory").mkdir()  # a v1-looking tree: controllers, no cgroup.controllers anywhere
    (tmp_path / "memory" / "cgroup.procs").write_text("")
    config = Config(cgroup=CgroupConfig(root=str(tmp_path), kubelet_root=str(tmp_path / "kubelet")))
    env = bpf_env_of(config)
    assert env.unavailable.startswith(f"no cgroup v2 hierarchy under {tmp_path}")
    collectors = build_collectors(config, cgroup_fs(config), AgentStats())
    try:
        assert not any(isinstance(c, BpfCollector) for c in collectors)
        assert "memory" in [c.name for c in collectors]  # from the cgroup files
    finally:
        for c in collectors:
            c.close()


def test_a_walk_error_in_one_subtree_stops_the_sweep(cpu_collector: CpuSchedCollector, cgroups: CgroupFactory,
                                                     stats: AgentStats) -> None:
    """A live cgroup the walk cannot reach (here: deeper than PATH_MAX, so stat() of its path fails with
    ENAMETOOLONG, a real kernel error) keeps its entries: the sweep stops instead of taking "not seen"
    for "gone"."""
    top = cgroups.make("deep")
    name = "d" * 250
    fds = [os.open(top.path, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(18):  # 18 x 251 characters: past PATH_MAX (4096)
            os.mkdir(name, dir_fd=fds[-1])
            fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        deep_id = os.fstat(fds[-1]).st_ino
        gone = cgroups.make("gone-sweep")
        gone_id = gone.id
        gone.remove()
        lat = cpu_collector._program.table("runq_latency")
        lat[lat.Key(gone_id)] = lat.Leaf()
        lat[lat.Key(deep_id)] = lat.Leaf()
        sweep_errors = {"kpod.component": cpu_collector.name, "error.type": "sweep"}
        before = stats.get("kpod.agent.errors", **sweep_errors)
        assert cpu_collector.sweep({"runq_latency": {gone_id, deep_id}}) == 0
        keys = {int(k.value) for k in lat}
        assert deep_id in keys  # the live cgroup's entry stays...
        assert gone_id in keys  # ...and the sweep deleted nothing (the next one retries)
        assert stats.get("kpod.agent.errors", **sweep_errors) == before + 1
        del lat[lat.Key(gone_id)]
        del lat[lat.Key(deep_id)]
    finally:
        for parent_fd in reversed(fds[:-1]):
            os.close(fds.pop())
            os.rmdir(name, dir_fd=parent_fd)
        os.close(fds.pop())


def test_kernel_requirements_and_limitations() -> None:
    assert kernel_version("6.18.44-fc-v769") == (6, 18) and kernel_version("weird") == (0, 0)
    assert too_old("5.12.0", KERNEL_BPF_CMPXCHG, "x") == ""
    assert "5.12" in too_old("5.10.209-1", KERNEL_BPF_CMPXCHG, "the TCP program")
    # Hybrid, net_cls mounted, before 5.15: bpf_skb_cgroup_id may return the root for every socket.
    (limit,) = node_limitations("5.10.0", True, ["cpu", "net_cls", "memory"])
    assert limit.key == NET_CLS_FALLBACK and "net_cls" in limit.detail
    assert node_limitations("5.15.0", True, ["net_cls", "net_prio"]) == ()  # fixed in 5.15
    assert node_limitations("5.10.0", False, []) == ()  # pure v2: no v1 controllers to activate
    assert node_limitations("5.10.0", True, ["cpu", "memory"]) == ()


def test_pods_cgroup_is_where_kubelet_puts_pods(tmp_path: Path) -> None:
    assert find_pods_cgroup(tmp_path) is None
    (tmp_path / "kubepods").mkdir()
    assert find_pods_cgroup(tmp_path) == tmp_path / "kubepods"  # cgroupfs driver
    (tmp_path / "kubepods.slice").mkdir()
    assert find_pods_cgroup(tmp_path) == tmp_path / "kubepods.slice"  # systemd driver


def test_constants_shared_with_c_come_from_python() -> None:
    spec = ProgramSpec("p", (), failure_maps=("a_map", "b_map"), missing_marks=("lru",))
    flags = defines(spec, 7, 9)
    assert spec.losses == ("a_map", "b_map", "removed_cgroups", "lru")
    assert {"-DKPOD_MAX_CGROUPS=7", "-DKPOD_MAX_TASKS=9", f"-DKPOD_HIST_SLOTS={SLOTS}", "-DKPOD_LOSS_SLOTS=4",
            "-DKPOD_LOSS_A_MAP=0", "-DKPOD_LOSS_B_MAP=1", "-DKPOD_LOSS_REMOVED_CGROUPS=2",
            "-DKPOD_LOSS_LRU=3"} == set(flags)
    # Every KPOD_LOSS_<NAME> the C code uses is a slot Python knows for that program.
    repo = Path(__file__).resolve().parents[2] / "ebpf"

    def used_in(file: str) -> set[str]:
        code = re.sub(r"//.*", "", (repo / file).read_text())  # comments name the scheme, not slots
        return set(re.findall(r"KPOD_LOSS_([A-Z_]+)\b", code)) - {"SLOTS"}

    for name, spec in (("cpu_sched", CPU_SPEC), ("mem", MEM_SPEC), ("syscall", syscall_spec(True)),
                       ("tcp", tcp_spec(True))):
        assert used_in(f"{name}.c") <= {n.upper() for n in spec.losses}, name
    assert used_in("kpod.h") == {"REMOVED_CGROUPS"}


def test_pods_only_in_v1_is_a_limitation(tmp_path: Path) -> None:
    """A hybrid node whose runtime creates no v2 directories: detected from the layout, not assumed."""
    v2, memory = tmp_path / "unified", tmp_path / "memory"
    for d in (v2, memory / "kubepods.slice"):
        d.mkdir(parents=True)
    layout = CgroupLayout(str(tmp_path), CgroupVersion.HYBRID, {"memory": str(memory)}, str(v2))
    assert pods_only_in_v1(layout) == str(memory)
    (limit,) = node_limitations("6.18.0", True, ["memory"], pods_only_in_v1(layout))
    assert limit.key == NO_V2_POD_CGROUPS and str(memory) in limit.detail
    (v2 / "kubepods.slice").mkdir()
    assert pods_only_in_v1(layout) is None
