"""The pure parsers on real kernel output (v2 fixtures, this machine's live v1 and procfs files) and
property tests: any text gives a typed result with malformed lines counted, never an exception."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpod_otel.cgroup.parsers import (
    V1_MEMORY_UNLIMITED_MIN,
    BlkioStat,
    CpuQuota,
    CpuStat,
    IoStat,
    MemoryEvents,
    MemoryLimit,
    MemoryStat,
    Pressure,
    SingleValue,
    cpu_stat_from_v1,
    cpuacct_time,
    parse_blkio_stat,
    parse_cfs_quota_us,
    parse_cgroup_procs,
    parse_cpu_max,
    parse_cpu_stat,
    parse_io_stat,
    parse_memory_events,
    parse_memory_limit_in_bytes,
    parse_memory_max,
    parse_memory_stat,
    parse_pressure,
    parse_single_value,
)
from kpod_otel.procfs.parsers import (
    MountInfo,
    NetDev,
    Uevent,
    parse_mountinfo,
    parse_net_dev,
    parse_uevent,
)
from tests.conftest import host_needs, host_needs_v1, host_needs_v2, require

V2 = Path(__file__).parent.parent / "fixtures" / "cgroup" / "v2"
R = TypeVar("R")
C = TypeVar("C")


# --- v2 fixtures --------------------------------------------------------------------------------------


def test_io_stat_v2() -> None:
    stat = parse_io_stat((V2 / "io.stat").read_text())
    assert stat.malformed == 0
    io = stat.device_io()
    assert set(io) == {"259:0", "253:0", "7:3"}
    assert (io["259:0"].read_bytes, io["259:0"].write_bytes, io["259:0"].reads, io["259:0"].writes) == (
        2392064, 97935360, 166, 9163)
    assert stat.devices["7:3"]["dios"] == 0


def test_io_stat_v2_with_iocost_keys() -> None:
    stat = parse_io_stat((V2 / "io.stat.iocost").read_text())
    assert stat.malformed == 0
    assert stat.devices["8:0"]["cost.usage"] == 1893
    assert "cost.vrate" not in stat.devices["8:0"]  # a ratio (100.00), not a counter
    assert stat.device_io()["8:0"].read_bytes == 34816000
    assert parse_io_stat("8:0 rbytes=1 wbytes\n8:1 rbytes=-1\nx rbytes=1\n").malformed == 3


def test_memory_stat_v2() -> None:
    stat = parse_memory_stat((V2 / "memory.stat").read_text())
    assert stat.malformed == 0
    assert len(stat.values) == 51
    assert stat.major_faults == 1611
    assert stat.values["anon"] == 41713664


def test_memory_events_v2() -> None:
    events = parse_memory_events((V2 / "memory.events").read_text())
    assert events.malformed == 0
    assert events.oom_kill == 3
    assert events.values["max"] == 1873


def test_cpu_stat_v2() -> None:
    stat = parse_cpu_stat((V2 / "cpu.stat").read_text())
    assert stat.malformed == 0 and stat.usage_usec == 2361441
    assert stat.values["nr_throttled"] == 17 and stat.values["core_sched.force_idle_usec"] == 0


def test_cpu_stat_v2_root_fixture() -> None:
    stat = parse_cpu_stat((V2 / "cpu.stat.root").read_text())
    assert stat.malformed == 0
    assert set(stat.values) == {"usage_usec", "user_usec", "system_usec", "nice_usec"}
    assert stat.usage_usec == 334259468


def cpu_seconds_of_this_process() -> float:
    t = os.times()
    return t.user + t.system


def test_cpu_stat_live_v2_root() -> None:
    """The live root cpu.stat parses the same way, and its usage grows by at least the CPU time this test
    burns between two reads (values the test produced itself: never a figure recorded on another machine,
    whose uptime says nothing about this one's)."""
    path = Path(host_needs_v2(), "cpu.stat")
    first = parse_cpu_stat(path.read_text())
    burnt_from = cpu_seconds_of_this_process()
    while cpu_seconds_of_this_process() - burnt_from < 0.2:
        pass
    burnt = cpu_seconds_of_this_process() - burnt_from
    second = parse_cpu_stat(path.read_text())
    for stat in (first, second):
        assert stat.malformed == 0
        assert set(stat.values) >= {"usage_usec", "user_usec", "system_usec"}
    assert first.usage_usec is not None and second.usage_usec is not None
    # the root's usage is tick-sampled (kcpustat): allow half of the burnt time for sampling
    assert second.usage_usec - first.usage_usec >= burnt * 1e6 / 2


# --- v1, live on this machine -------------------------------------------------------------------------


def live(path: str) -> str:
    """A root-cgroup file of a v1 controller (/sys/fs/cgroup/<controller>/<file>); skipped on a host
    without that v1 controller (pure v2), or without the file (blkio.bfq.* needs the BFQ scheduler)."""
    host_needs_v1(path.split("/")[4])
    host_needs(os.path.exists(path), f"this kernel has no {path}")
    return Path(path).read_text()


def test_memory_stat_v1_live() -> None:
    text = live("/sys/fs/cgroup/memory/memory.stat")
    stat = parse_memory_stat(text)
    assert stat.malformed == 0
    assert len(stat.values) == len(text.splitlines())
    # v1 reports the hierarchical count as total_pgmajfault
    assert stat.major_faults == stat.values["total_pgmajfault"]
    assert stat.values["total_pgfault"] >= stat.values["pgfault"]


def test_memory_oom_control_v1_live() -> None:
    """v1 memory.oom_control is flat keyed: parsed as memory events, its `oom_kill` is v2's."""
    control = parse_memory_events(live("/sys/fs/cgroup/memory/memory.oom_control"))
    assert control.malformed == 0
    assert control.values["oom_kill_disable"] == 0 and control.values["under_oom"] == 0
    assert control.oom_kill is not None and control.oom_kill >= 0


def test_cpu_stat_from_v1_in_v2_terms() -> None:
    v1 = parse_cpu_stat("nr_periods 10\nnr_throttled 4\nthrottled_time 2500000\n")
    stat = cpu_stat_from_v1(v1, cpuacct_time(parse_single_value("123456789\n"), parse_single_value("2000000\n")))
    assert (stat.user_usec, stat.system_usec, stat.usage_usec) == (123456, 2000, 125456)
    assert (stat.nr_periods, stat.nr_throttled, stat.throttled_usec) == (10, 4, 2500)
    assert stat.malformed == 0
    broken = cpuacct_time(parse_single_value("x"), parse_single_value("1\n"))
    assert broken.malformed == 1 and broken.user_usec is None and broken.usage_usec is None
    assert cpu_stat_from_v1(v1, broken).malformed == 1
    # on hybrid nodes the time comes from the v2 tree's own cpu.stat
    tree = parse_cpu_stat("usage_usec 30\nuser_usec 20\nsystem_usec 10\nnice_usec 0\n")
    assert (cpu_stat_from_v1(v1, tree).user_usec, cpu_stat_from_v1(v1, tree).nr_periods) == (20, 10)
    assert parse_single_value(" 42 \n").value == 42 and parse_single_value("").malformed == 1


@pytest.mark.parametrize("name", [
    "blkio.throttle.io_service_bytes", "blkio.throttle.io_service_bytes_recursive",
    "blkio.throttle.io_serviced", "blkio.throttle.io_serviced_recursive",
    "blkio.bfq.io_service_bytes", "blkio.bfq.io_service_bytes_recursive",
    "blkio.bfq.io_serviced", "blkio.bfq.io_serviced_recursive",
])
def test_blkio_v1_live(name: str) -> None:
    stat = parse_blkio_stat(live(f"/sys/fs/cgroup/blkio/{name}"))
    assert stat.malformed == 0
    assert stat.total is not None
    assert stat.total == sum(ops.get("Total", 0) for ops in stat.devices.values())


def test_blkio_v1_format() -> None:
    text = ("254:0 Read 4096\n254:0 Write 1048576\n254:0 Sync 1052672\n254:0 Async 0\n"
            "254:0 Discard 0\n254:0 Total 1052672\nTotal 1052672\n")
    stat = parse_blkio_stat(text)
    assert stat.malformed == 0 and stat.total == 1052672
    assert stat.reads_writes() == {"254:0": (4096, 1048576)}


def test_cgroup_procs() -> None:
    assert parse_cgroup_procs("12\n7\n\nx\n0\n") == ((12, 7), 2)


# --- procfs / sysfs, live -----------------------------------------------------------------------------


def stable(read: Callable[[], R], compare: Callable[[], C], tries: int = 20) -> tuple[R, C]:
    """(read(), compare()) taken while read() did not change around compare(): other work on this machine
    mounts, adds links and devices at any time, and a test compares what it saw at one instant."""
    for _ in range(tries):
        before = read()
        other = compare()
        if read() == before:
            return before, other
    raise AssertionError("the machine kept changing under the test")


def test_mountinfo_live_matches_findmnt() -> None:
    require(shutil.which("findmnt") is not None, "needs findmnt (util-linux)")

    def findmnt() -> Any:
        return json.loads(subprocess.run(["findmnt", "-J", "--list", "-o", "ID,TARGET,FSTYPE,MAJ:MIN,FSROOT"],
                                         check=True, capture_output=True, text=True).stdout)

    text, out = stable(lambda: Path("/proc/self/mountinfo").read_text(), findmnt)
    info = parse_mountinfo(text)
    assert info.malformed == 0
    expected = {(int(fs["id"]), fs["target"], fs["fstype"], fs["maj:min"], fs["fsroot"])
                for fs in out["filesystems"]}
    got = {(m.mount_id, m.mount_point, m.fs_type, m.device, m.root) for m in info.mounts}
    assert got == expected


def test_mountinfo_escapes_and_optional_fields() -> None:
    line = ("36 35 98:0 /mnt1 /mnt\\040with\\040space rw,noatime master:1 shared:7 - overlay overlay "
            "rw,lowerdir=/l,upperdir=/u,workdir=/w\n")
    (m,) = parse_mountinfo(line).mounts
    assert m.mount_point == "/mnt with space" and m.optional_fields == ("master:1", "shared:7")
    assert m.fs_type == "overlay" and m.super_option("upperdir") == "/u" and m.device == "98:0"
    assert parse_mountinfo("garbage\n" + line).malformed == 1


def test_net_dev_live_matches_ip_link() -> None:
    def interfaces() -> list[str]:
        netdev = parse_net_dev(Path("/proc/self/net/dev").read_text())
        assert netdev.malformed == 0
        return sorted(netdev.interfaces)

    def ip_link() -> Any:
        return json.loads(subprocess.run(["ip", "-s", "-j", "link"], check=True, capture_output=True,
                                         text=True).stdout)

    names, links = stable(interfaces, ip_link)
    assert set(names) == {link["ifname"] for link in links}
    lo = parse_net_dev(Path("/proc/self/net/dev").read_text()).interfaces["lo"]
    assert lo.rx_bytes >= 0 and lo.tx_packets >= 0


def test_net_dev_format() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
        "colls carrier compressed\n"
        "  eth0: 801304842  612302    1    2    0     0          0         0 27431021  203221    3    4    0 "
        "    0       0          0\n"
        "    lo:    3393      33    0    0    0     0          0         0     3393      33    0    0    0 "
        "    0       0          0\n"
        "  bad: 1 2 3\n"
    )
    netdev = parse_net_dev(text)
    assert netdev.malformed == 1
    eth0 = netdev.interfaces["eth0"]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_drops) == (801304842, 612302, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_drops) == (27431021, 203221, 3, 4)


def test_uevent_live_matches_lsblk() -> None:
    require(shutil.which("lsblk") is not None, "needs lsblk")
    def lsblk() -> Any:
        return json.loads(subprocess.run(["lsblk", "-J", "-o", "NAME,MAJ:MIN"], check=True, capture_output=True,
                                         text=True).stdout)

    _, out = stable(lambda: sorted(os.listdir("/sys/dev/block")), lsblk)
    devices = out["blockdevices"]
    require(bool(devices), "no block devices visible")
    for dev in devices:
        uevent = parse_uevent(Path(f"/sys/dev/block/{dev['maj:min']}/uevent").read_text())
        assert uevent.malformed == 0
        assert uevent.devname == dev["name"]
        assert f"{uevent.values['MAJOR']}:{uevent.values['MINOR']}" == dev["maj:min"]


# --- properties: any text -> typed result, malformed counted, never another exception ----------------

PARSERS: list[tuple[Callable[[str], object], type]] = [
    (parse_io_stat, IoStat), (parse_memory_stat, MemoryStat), (parse_memory_events, MemoryEvents),
    (parse_cpu_stat, CpuStat), (parse_single_value, SingleValue), (parse_blkio_stat, BlkioStat),
    (parse_mountinfo, MountInfo), (parse_net_dev, NetDev), (parse_uevent, Uevent),
    (parse_cpu_max, CpuQuota), (parse_cfs_quota_us, CpuQuota), (parse_memory_max, MemoryLimit),
    (parse_memory_limit_in_bytes, MemoryLimit), (parse_pressure, Pressure),
]

KERNEL_CHARS = [*"0123456789abcdef:=_- \n\t|/\\RWTotalrbytes.vgmxsomeful", "\x00", "é"]
kernelish = st.text(alphabet=st.sampled_from(KERNEL_CHARS))


@pytest.mark.parametrize("parse, result_type", PARSERS, ids=[p.__name__ for p, _ in PARSERS])
@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), kernelish))
def test_parsers_never_raise(parse: Callable[[str], object], result_type: type, text: str) -> None:
    result = parse(text)
    assert isinstance(result, result_type)
    assert result.malformed >= 0  # type: ignore[attr-defined]
    assert result.malformed <= len(text.splitlines()) + text.count("\n") + 1  # type: ignore[attr-defined]


keys = st.from_regex(r"[a-z][a-z_.]{0,20}", fullmatch=True)
uints = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(values=st.dictionaries(keys, uints, max_size=30), junk=st.lists(st.sampled_from(
    ["oops", "a b c", "k -1", "k 1.5", "k 0x10"]), max_size=5))
def test_flat_keyed_round_trip(values: dict[str, int], junk: list[str]) -> None:
    lines = [f"{k} {v}" for k, v in values.items()] + junk
    stat = parse_memory_stat("\n".join(lines) + "\n")
    assert dict(stat.values) == values
    assert stat.malformed == len(junk)


devs = st.tuples(st.integers(0, 4095), st.integers(0, 2**20)).map(lambda t: f"{t[0]}:{t[1]}")


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(devs, st.tuples(uints, uints, uints, uints), max_size=8))
def test_io_stat_round_trip(data: dict[str, tuple[int, int, int, int]]) -> None:
    text = "".join(f"{d} rbytes={a} wbytes={b} rios={c} wios={e} dbytes=0 dios=0\n"
                   for d, (a, b, c, e) in data.items())
    io = parse_io_stat(text).device_io()
    assert {d: (v.read_bytes, v.write_bytes, v.reads, v.writes) for d, v in io.items()} == data


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(devs, st.tuples(uints, uints), max_size=8))
def test_blkio_round_trip(data: dict[str, tuple[int, int]]) -> None:
    text = "".join(f"{d} Read {r}\n{d} Write {w}\n{d} Total {r + w}\n" for d, (r, w) in data.items())
    text += f"Total {sum(r + w for r, w in data.values())}\n"
    stat = parse_blkio_stat(text)
    assert stat.malformed == 0 and stat.reads_writes() == data


ifnames = st.from_regex(r"[a-z][a-z0-9.@-]{0,14}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(ifnames, st.lists(uints, min_size=16, max_size=16), max_size=6))
def test_net_dev_round_trip(data: dict[str, list[int]]) -> None:
    text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n"
    text += "".join(f"{name:>6}: " + " ".join(map(str, v)) + "\n" for name, v in data.items())
    parsed = parse_net_dev(text)
    assert parsed.malformed == 0
    for name, v in data.items():
        c = parsed.interfaces[name]
        assert (c.rx_bytes, c.rx_packets, c.rx_errors, c.rx_drops) == tuple(v[0:4])
        assert (c.tx_bytes, c.tx_packets, c.tx_errors, c.tx_drops) == tuple(v[8:12])


paths = st.from_regex(r"/[a-zA-Z0-9_ \\.-]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(point=paths, fstype=st.sampled_from(["ext4", "tmpfs", "overlay", "cgroup2"]))
def test_mountinfo_round_trip(point: str, fstype: str) -> None:
    escaped = point.replace("\\", "\\134").replace(" ", "\\040")
    line = f"41 31 0:38 / {escaped} rw,relatime shared:9 - {fstype} src rw\n"
    (m,) = parse_mountinfo(line).mounts
    assert m.mount_point == point and m.fs_type == fstype


def test_parse_boot_time() -> None:
    from kpod_otel.procfs.parsers import parse_boot_time

    assert parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1795940000\nprocesses 9\n") == 1795940000 * 10**9
    assert parse_boot_time("cpu  1 2 3\n") is None
    with open("/proc/stat") as f:
        boot = parse_boot_time(f.read())
    with open("/proc/uptime") as f:  # the kernel's own uptime: boot = now - uptime, to the second
        uptime_s = float(f.read().split()[0])
    assert boot is not None and abs(boot / 1e9 - (time.time() - uptime_s)) < 2


# --- CPU time/throttling, memory usage/limits, pressure (issue 15) -----------------------------------


def test_cpu_stat_v2_throttling_and_split() -> None:
    stat = parse_cpu_stat((V2 / "cpu.stat").read_text())
    assert (stat.user_usec, stat.system_usec) == (1587230, 774211)
    assert (stat.nr_periods, stat.nr_throttled, stat.throttled_usec) == (1203, 17, 912332)


def test_cpu_stat_v1_live_throttled_time_is_ns() -> None:
    v1 = parse_cpu_stat(live("/sys/fs/cgroup/cpu/cpu.stat"))
    assert v1.malformed == 0 and v1.user_usec is None  # v1's cpu controller has no usage: that is cpuacct's
    stat = cpu_stat_from_v1(v1, CpuStat())
    assert stat.throttled_usec == v1.values["throttled_time"] // 1000
    assert stat.nr_periods is not None and stat.nr_throttled is not None and stat.user_usec is None


def test_cpu_max_v2() -> None:
    quota = parse_cpu_max((V2 / "cpu.max").read_text())
    assert (quota.quota_us, quota.period_us, quota.cpus, quota.malformed) == (50000, 100000, 0.5, 0)
    unlimited = parse_cpu_max((V2 / "cpu.max.unlimited").read_text())
    assert (unlimited.quota_us, unlimited.period_us, unlimited.cpus, unlimited.malformed) == (None, 100000, None, 0)
    for bad in ("", "50000", "max", "-1 100000", "50000 100000 7", "50000 max"):
        assert parse_cpu_max(bad).malformed == 1, bad
        assert parse_cpu_max(bad).cpus is None


def test_cfs_quota_v1_live_and_format() -> None:
    assert parse_cfs_quota_us(live("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) == CpuQuota()  # root: -1
    assert parse_single_value(live("/sys/fs/cgroup/cpu/cpu.cfs_period_us")).value == 100000
    assert parse_cfs_quota_us("150000\n") == CpuQuota(150000)
    assert CpuQuota(150000, 100000).cpus == 1.5
    assert parse_cfs_quota_us("-2\n").malformed == 1 and parse_cfs_quota_us("").malformed == 1


def test_memory_max_v2() -> None:
    assert parse_memory_max((V2 / "memory.max").read_text()) == MemoryLimit(268435456)
    assert parse_memory_max((V2 / "memory.max.unlimited").read_text()) == MemoryLimit()
    assert parse_memory_max("1.5G\n").malformed == 1 and parse_memory_max("").malformed == 1


def test_memory_limit_v1_unlimited_is_detected() -> None:
    # the root's limit is the "unlimited" value this kernel prints
    assert parse_memory_limit_in_bytes(live("/sys/fs/cgroup/memory/memory.limit_in_bytes")) == MemoryLimit()
    for page_size in (4096, 16384, 65536):  # PAGE_COUNTER_MAX pages, as x86-64 and arm64 print it
        assert parse_memory_limit_in_bytes(f"{(2**63 - 1) // page_size * page_size}\n") == MemoryLimit()
    assert parse_memory_limit_in_bytes("268435456\n") == MemoryLimit(268435456)
    assert parse_memory_limit_in_bytes("-1\n").malformed == 1


def test_memory_stat_usage_breakdown_v2() -> None:
    stat = parse_memory_stat((V2 / "memory.stat").read_text())
    assert (stat.anon, stat.file, stat.inactive_file) == (41713664, 9691136, 5890048)
    assert parse_single_value((V2 / "memory.current").read_text()).value == 55406592


def test_memory_stat_usage_breakdown_v1_live() -> None:
    stat = parse_memory_stat(live("/sys/fs/cgroup/memory/memory.stat"))
    # v1: the hierarchical totals, which are what memory.usage_in_bytes counts
    assert (stat.anon, stat.file, stat.inactive_file) == (
        stat.values["total_rss"], stat.values["total_cache"], stat.values["total_inactive_file"])
    assert parse_single_value(live("/sys/fs/cgroup/memory/memory.usage_in_bytes")).value is not None


def test_memory_stat_v1_own_values_do_not_pass_for_hierarchical_ones() -> None:
    stat = parse_memory_stat("cache 1\nrss 2\ninactive_file 3\ntotal_cache 10\ntotal_rss 20\n"
                             "total_inactive_file 30\n")
    assert (stat.anon, stat.file, stat.inactive_file) == (20, 10, 30)


def test_cpuacct_v1_live_usage_split_is_ns() -> None:
    user = parse_single_value(live("/sys/fs/cgroup/cpuacct/cpuacct.usage_user")).value
    system = parse_single_value(live("/sys/fs/cgroup/cpuacct/cpuacct.usage_sys")).value
    usage = parse_single_value(live("/sys/fs/cgroup/cpuacct/cpuacct.usage")).value
    assert user is not None and system is not None and usage is not None and usage > 0
    # cpuacct.usage is the scheduler's exact ns; the split is sampled at ticks but in the same unit:
    # the two agree to a few percent (a unit error would be a factor of 1000)
    assert 0.9 <= (user + system) / usage <= 1.1


@pytest.mark.parametrize("resource", ["cpu", "memory", "io"])
def test_pressure_fixtures(resource: str) -> None:
    text = (V2 / f"{resource}.pressure").read_text()
    pressure = parse_pressure(text)
    assert pressure.malformed == 0
    expected = {line.split()[0]: int(line.rsplit("total=", 1)[1]) for line in text.splitlines()}
    assert (pressure.some_usec, pressure.full_usec) == (expected["some"], expected["full"])


@pytest.mark.parametrize("resource", ["cpu", "memory", "io"])
def test_pressure_live_on_the_v2_tree(resource: str) -> None:
    pressure = parse_pressure(live(f"/sys/fs/cgroup/unified/{resource}.pressure"))
    assert pressure.malformed == 0 and pressure.some_usec is not None and pressure.full_usec is not None


def test_pressure_format() -> None:
    assert parse_pressure("some avg10=1.00 avg60=0.50 avg300=0.10 total=42\n") == Pressure(42, None)
    bad = ("some avg10=1.00 total=x\nfull total=1 junk\nhalf avg10=0.00 total=1\nsome avg10=0.00\nsome\n"
           "total=3\nsome total=-1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
    assert parse_pressure(bad) == Pressure(None, 7, 7)


@settings(max_examples=200, deadline=None)
@given(some=uints, full=st.one_of(st.none(), uints), avgs=st.lists(
    st.tuples(st.integers(0, 100), st.integers(0, 99)), min_size=3, max_size=3))
def test_pressure_round_trip(some: int, full: int | None, avgs: list[tuple[int, int]]) -> None:
    avg = " ".join(f"avg{w}={a}.{b:02d}" for w, (a, b) in zip((10, 60, 300), avgs, strict=True))
    text = f"some {avg} total={some}\n" + (f"full {avg} total={full}\n" if full is not None else "")
    assert parse_pressure(text) == Pressure(some, full, 0)


@settings(max_examples=200, deadline=None)
@given(quota=st.one_of(st.none(), uints), period=st.integers(1000, 1_000_000))
def test_cpu_max_round_trip(quota: int | None, period: int) -> None:
    parsed = parse_cpu_max(f"{'max' if quota is None else quota} {period}\n")
    assert (parsed.quota_us, parsed.period_us, parsed.malformed) == (quota, period, 0)


@settings(max_examples=200, deadline=None)
@given(value=st.integers(0, 2**64 - 1))
def test_memory_limits_round_trip(value: int) -> None:
    assert parse_memory_max(f"{value}\n") == MemoryLimit(value)
    v1 = parse_memory_limit_in_bytes(f"{value}\n")
    assert v1 == (MemoryLimit() if value >= V1_MEMORY_UNLIMITED_MIN else MemoryLimit(value))
    assert parse_single_value(f"{value}\n") == SingleValue(value)
