"""Compile, load and attach one program of `ebpf/`, report its state, and detach it on close.

One `BpfProgram` per area (cpu_sched, tcp, mem, syscall). A program that cannot be used (a tracepoint or
field missing in this kernel, a compile or verifier error, an attach failure) is logged once with the
reason and reported as `kpod.agent.bpf.program.loaded = 0`; the other programs are unaffected. When eBPF
cannot run at all (bcc missing, no permission, no cgroup v2 hierarchy), `BpfEnvironment.unavailable` says
why (`kpod_otel.bpf.support`) and the assembly logs it once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpod_otel.bpf import syscalls
from kpod_otel.bpf.cgroupv2 import find_pods_cgroup, pods_only_in_v1
from kpod_otel.bpf.fdinfo import parse_prog_fdinfo
from kpod_otel.bpf.histogram import SLOTS
from kpod_otel.bpf.kernel import KERNEL_CGROUP_IDS, Limitation, node_limitations, too_old
from kpod_otel.bpf.support import unavailable_reason
from kpod_otel.bpf.tracefs import CGROUP_RMDIR, TracepointNeed, check_tracepoint, find_tracefs
from kpod_otel.cgroup.fs import CgroupLayout, CgroupVersion
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

HEADER = "kpod.h"
_INCLUDE = f'#include "{HEADER}"'
MAX_TASKS = 65536  # entries of the per-task LRU timestamp maps (enqueued_at, entered_at)
REMOVED_MAP = "removed_cgroups"  # kpod.h: ids noted by the cgroup_rmdir hook, one map per program
MAP_FULL_WARN_RATIO = 0.9  # warn (once per crossing) when a per-cgroup map is this full

PROGRAM_ATTR = "kpod.bpf.program"
MAP_ATTR = "kpod.bpf.map"
LIMITATION_ATTR = "kpod.bpf.limitation"
UPDATE_FAILURES = "kpod.agent.bpf.map.update.failures"
MISSING_TIMESTAMPS = "kpod.agent.bpf.timestamps.missing"


@dataclass(frozen=True, slots=True)
class PerfEventAttach:
    fn: str
    ev_type: int  # perf_type_id (PERF_TYPE_SOFTWARE = 1)
    ev_config: int  # e.g. PERF_COUNT_SW_PAGE_FAULTS_MAJ = 6
    sample_period: int = 1


@dataclass(frozen=True, slots=True)
class CgroupAttach:
    fn: str
    prog_type: str  # "cgroup_skb" | "sock_ops"
    attach_type: int  # syscalls.CGROUP_INET_INGRESS ...


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    name: str  # also the source file name without ".c"
    tracepoints: tuple[TracepointNeed, ...]  # attached by bcc (TRACEPOINT_PROBE), checked first
    perf_events: tuple[PerfEventAttach, ...] = ()
    cgroup_attach: tuple[CgroupAttach, ...] = ()
    failure_maps: tuple[str, ...] = ()  # maps whose inserts can fail for lack of room (KPOD_LOSS_<MAP>)
    missing_marks: tuple[str, ...] = ()  # per-task LRU timestamp maps whose entry can be gone (evicted)
    cgroup_maps: tuple[str, ...] = ()  # per-cgroup maps: entries vs capacity, swept of removed cgroups
    defines: tuple[str, ...] = ()
    disabled: str = ""  # why configuration keeps this program off; "" when it may run
    min_kernel: tuple[int, int] = KERNEL_CGROUP_IDS
    min_kernel_for: str = "attribution by cgroup v2 id"  # what needs min_kernel, for the reason text

    @property
    def losses(self) -> tuple[str, ...]:
        """The names of the slots of the program's `losses` array, in index order (kpod.h)."""
        return (*self.failure_maps, REMOVED_MAP, *self.missing_marks)


def defines(spec: ProgramSpec, max_cgroups: int, max_tasks: int = MAX_TASKS) -> list[str]:
    """The -D flags every program is compiled with: the constants kpod.h shares with Python."""
    flags = [f"-DKPOD_MAX_CGROUPS={max_cgroups}", f"-DKPOD_MAX_TASKS={max_tasks}",
             f"-DKPOD_HIST_SLOTS={SLOTS}", f"-DKPOD_LOSS_SLOTS={len(spec.losses)}"]
    flags += [f"-DKPOD_LOSS_{name.upper()}={index}" for index, name in enumerate(spec.losses)]
    return flags + [f"-D{d}" for d in spec.defines]


def _default_program_dirs(configured: str) -> tuple[Path, ...]:
    repo = Path(__file__).resolve().parents[2] / "ebpf"  # a source checkout / editable install
    installed = Path(sys.prefix) / "share" / "kpod-otel" / "ebpf"  # wheel shared-data
    return (Path(configured), repo, installed)


@dataclass(frozen=True, slots=True)
class BpfEnvironment:
    """What every program needs from the node, resolved once at start-up."""

    program_dirs: tuple[Path, ...]
    cgroup2_root: Path | None
    tracefs: Path | None
    max_cgroups: int = 4096
    max_tasks: int = MAX_TASKS
    cgroup_skb: bool = True
    syscall_latency: bool = False
    enable_stats: bool = False
    unavailable: str = ""  # why eBPF cannot run at all; "" when it can
    # Where the cgroup programs (TCP) attach: kubelet's pods cgroup, so that only pods' packets pay for
    # them; the v2 root in local mode or when there is no pods cgroup.
    attach_cgroup: Path | None = None
    kernel_release: str = ""
    limitations: tuple[Limitation, ...] = ()
    # What was already logged once (a per-agent set shared by the collectors of this environment).
    said: set[str] = field(default_factory=set, compare=False)

    @classmethod
    def detect(cls, *, cgroup_root: str, cgroup2_root: Path | None, program_dir: str, enabled: bool = True,
               max_cgroups: int = 4096, cgroup_skb: bool = True, syscall_latency: bool = False,
               enable_stats: bool = False, layout: CgroupLayout | None = None,
               attach_at_root: bool = False) -> BpfEnvironment:
        """The node's eBPF support (`cgroup2_root`: the v2 hierarchy the cgroup layer found under
        `cgroup_root`, None on a pure-v1 node; `layout`: that layer's view, for the node-wide limitations)
        with the programs' settings. `attach_at_root`: local mode, no pods cgroup to attach below."""
        tracefs = find_tracefs()
        release = os.uname().release
        reason = unavailable_reason(enabled=enabled, cgroup_root=cgroup_root, cgroup2_root=cgroup2_root,
                                    tracefs=tracefs, proc_status_text=Path("/proc/self/status").read_text())
        reason = reason or too_old(release, KERNEL_CGROUP_IDS, "attribution by cgroup v2 id")
        dirs = _default_program_dirs(program_dir)
        if reason:
            return cls(dirs, cgroup2_root, tracefs, unavailable=reason, kernel_release=release)
        assert cgroup2_root is not None
        attach = cgroup2_root if attach_at_root else find_pods_cgroup(cgroup2_root) or cgroup2_root
        limitations = () if layout is None else node_limitations(
            release, layout.version is CgroupVersion.HYBRID, layout.v1_controllers, pods_only_in_v1(layout))
        return cls(dirs, cgroup2_root, tracefs, max_cgroups=max_cgroups, cgroup_skb=cgroup_skb,
                   syscall_latency=syscall_latency, enable_stats=enable_stats, attach_cgroup=attach,
                   kernel_release=release, limitations=limitations)

    def say_once(self, key: str, message: str, *args: object) -> None:
        """A warning logged once per agent (the collectors share this environment)."""
        if key not in self.said:
            self.said.add(key)
            log.warning(message, *args)

    def report_limitations(self, stats: AgentStats) -> None:
        """Log each node-wide limitation once and show it as `kpod.agent.bpf.kernel.limitation`."""
        for limitation in self.limitations:
            self.say_once(limitation.key, "eBPF metrics may be wrong on this node: %s", limitation.detail)
            stats.set("kpod.agent.bpf.kernel.limitation", 1, **{LIMITATION_ATTR: limitation.key})

    def source_of(self, name: str) -> Path | None:
        for directory in self.program_dirs:
            if (directory / f"{name}.c").is_file() and (directory / HEADER).is_file():
                return directory / f"{name}.c"
        return None


@dataclass(slots=True)
class BpfProgram:
    """One loaded program and everything attached for it."""

    spec: ProgramSpec
    env: BpfEnvironment
    stats: AgentStats
    reason: str = ""  # why the program is not running; "" when it is
    bpf: Any = None
    _links: list[int] = field(default_factory=list)
    _cgroup_fd: int = -1
    _full_maps: set[str] = field(default_factory=set)  # maps past MAP_FULL_WARN_RATIO, warned about

    @property
    def loaded(self) -> bool:
        return self.bpf is not None and not self.reason

    @property
    def _attrs(self) -> dict[str, str]:
        return {PROGRAM_ATTR: self.spec.name}

    def load(self) -> bool:
        """Compile, load and attach; on failure log the reason once and leave nothing attached."""
        self.reason = self.env.unavailable or self.spec.disabled or self._check() or self._load_and_attach()
        if self.reason:
            if self.spec.disabled and not self.env.unavailable:
                log.info("eBPF program %s: %s", self.spec.name, self.reason)
            elif not self.env.unavailable:  # a node-wide reason is logged once by the caller
                log.warning("eBPF program %s not loaded: %s (its metrics are unavailable; the other "
                            "programs keep running)", self.spec.name, self.reason)
                self.stats.error("bpf", "load")
            self._release()
        self.stats.set("kpod.agent.bpf.program.loaded", 1 if self.loaded else 0, **self._attrs)
        return self.loaded

    def _check(self) -> str:
        if self.env.tracefs is None:
            return "tracefs is not mounted"
        old = too_old(self.env.kernel_release, self.spec.min_kernel, self.spec.min_kernel_for)
        if old:
            return old
        for need in (*self.spec.tracepoints, CGROUP_RMDIR):  # kpod.h attaches cgroup_rmdir everywhere
            reason = check_tracepoint(self.env.tracefs, need)
            if reason:
                return reason
        if self.spec.cgroup_attach and self.env.attach_cgroup is None:
            return "no cgroup v2 hierarchy to attach cgroup programs to"
        return ""

    def _load_and_attach(self) -> str:
        source = self.env.source_of(self.spec.name)
        if source is None:
            dirs = ", ".join(str(d) for d in self.env.program_dirs)
            return f"{self.spec.name}.c (with {HEADER}) not found in {dirs}"
        try:
            header = (source.parent / HEADER).read_text()
            text = source.read_text().replace(_INCLUDE, header)
        except OSError as exc:
            return f"cannot read {source}: {exc.strerror}"
        cflags = defines(self.spec, self.env.max_cgroups, self.env.max_tasks)
        try:
            from bcc import BPF

            # Compiles, loads and attaches every TRACEPOINT_PROBE of the program.
            self.bpf = BPF(text=text.encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for compile, verifier and attach errors
            return f"compile/load failed: {exc}"
        try:
            for pe in self.spec.perf_events:
                self.bpf.attach_perf_event(ev_type=pe.ev_type, ev_config=pe.ev_config, fn_name=pe.fn.encode(),
                                           sample_period=pe.sample_period)
            for ca in self.spec.cgroup_attach:
                self._attach_cgroup(ca)
        except Exception as exc:
            return f"attach failed: {exc}"
        if self.env.enable_stats:
            self._enable_stats()
        return ""

    def _attach_cgroup(self, ca: CgroupAttach) -> None:
        from bcc import BPF

        prog_type = {"cgroup_skb": BPF.CGROUP_SKB, "sock_ops": BPF.SOCK_OPS}[ca.prog_type]
        fn = self.bpf.load_func(ca.fn.encode(), prog_type)
        assert self.env.attach_cgroup is not None
        if self._cgroup_fd < 0:
            self._cgroup_fd = os.open(self.env.attach_cgroup, os.O_RDONLY | os.O_DIRECTORY)
        # BPF links (5.7) are always there where the programs load (BPF_CMPXCHG, 5.12): no fallback.
        self._links.append(syscalls.link_create(fn.fd, self._cgroup_fd, ca.attach_type))

    def _enable_stats(self) -> None:
        try:
            self._links.append(syscalls.enable_run_time_stats())  # closed with the links
        except OSError as exc:
            log.warning("could not enable BPF run-time statistics: %s", exc)

    def table(self, name: str) -> Any:
        return self.bpf[name.encode()]

    def report(self, entries: dict[str, int]) -> None:
        """Self-metrics of this cycle: map fill (entries counted by the caller's read), failed inserts
        (counted in the kernel), and run time/count where the kernel shows them."""
        if not self.loaded:
            return
        for name in self.spec.cgroup_maps:
            attrs = {PROGRAM_ATTR: self.spec.name, MAP_ATTR: name}
            self.stats.set("kpod.agent.bpf.map.capacity", self.env.max_cgroups, **attrs)
            if name in entries:
                self.stats.set("kpod.agent.bpf.map.entries", entries[name], **attrs)
                self._warn_when_nearly_full(name, entries[name])
        try:
            losses = self.bpf[b"losses"]
            for index, name in enumerate(self.spec.losses):
                value = int(losses[losses.Key(index)].value)
                metric = MISSING_TIMESTAMPS if name in self.spec.missing_marks else UPDATE_FAILURES
                self.stats.set(metric, value, **{PROGRAM_ATTR: self.spec.name, MAP_ATTR: name})
        except (KeyError, OSError) as exc:
            log.debug("reading losses of %s: %s", self.spec.name, exc)
        run_time, run_cnt, misses, shown = 0, 0, 0, False
        for fn in list(self.bpf.funcs.values()):
            try:
                text = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
            except OSError:
                continue
            parsed = parse_prog_fdinfo(text)
            if parsed is not None:
                shown = True
                run_time += parsed.run_time_ns
                run_cnt += parsed.run_cnt
                misses += parsed.recursion_misses
        if shown and (run_cnt or self.env.enable_stats):  # all zero while kernel.bpf_stats_enabled=0
            self.stats.set("kpod.agent.bpf.program.run.time", run_time / 1e9, **self._attrs)
            self.stats.set("kpod.agent.bpf.program.run.count", run_cnt, **self._attrs)
        if shown:  # counted whether or not bpf_stats are on
            self.stats.set("kpod.agent.bpf.program.recursion.misses", misses, **self._attrs)

    def _warn_when_nearly_full(self, name: str, entries: int) -> None:
        full = entries >= MAP_FULL_WARN_RATIO * self.env.max_cgroups
        if full and name not in self._full_maps:
            log.warning("BPF map %s of %s holds %d of %d cgroups: new cgroups will not be measured once it "
                        "is full (kpod.agent.bpf.map.update.failures); raise bpf.max-cgroups above the "
                        "number of cgroups on the node (see docs/ebpf.md)", name, self.spec.name, entries,
                        self.env.max_cgroups)
            self._full_maps.add(name)
        elif not full:
            self._full_maps.discard(name)

    def _release(self) -> None:
        for link_fd in self._links:
            with contextlib.suppress(OSError):
                os.close(link_fd)  # detaches the program
        self._links.clear()
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self.bpf is not None:
            try:
                self.bpf.cleanup()  # detaches tracepoints and perf events, closes program fds
            except Exception as exc:
                log.warning("cleanup of %s failed: %s", self.spec.name, exc)
            self.bpf = None

    def close(self) -> None:
        was_loaded = self.loaded
        self._release()
        if was_loaded or not self.reason:
            self.reason = "closed"
        self.stats.set("kpod.agent.bpf.program.loaded", 0, **self._attrs)
