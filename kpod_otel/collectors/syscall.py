"""System calls per container from `ebpf/syscall.c`: count, errors, and (optionally) latency."""

from __future__ import annotations

from collections.abc import Sequence

from kpod_otel.bpf.attribution import Owner, group_counters, group_histograms
from kpod_otel.bpf.collector import BpfCollector
from kpod_otel.bpf.histogram import to_point
from kpod_otel.bpf.maps import read_counters, read_histograms
from kpod_otel.bpf.program import BpfEnvironment, ProgramSpec
from kpod_otel.bpf.tracefs import TracepointNeed
from kpod_otel.catalog import specs
from kpod_otel.collector import CollectorSnapshot, InstrumentSpec

SYSCALL_COUNT = "kpod.syscall.count"
SYSCALL_ERRORS = "kpod.syscall.errors"
SYSCALL_LATENCY = "kpod.syscall.latency"



def syscall_spec(latency: bool) -> ProgramSpec:
    """The syscall program, with the latency histogram (sys_enter + entered_at) or without."""
    tracepoints = [TracepointNeed("raw_syscalls", "sys_exit", ("ret",))]
    maps = ["syscalls"]
    if latency:
        tracepoints.append(TracepointNeed("raw_syscalls", "sys_enter"))
        maps.append("syscall_latency")
    return ProgramSpec(
        name="syscall",
        tracepoints=tuple(tracepoints),
        failure_maps=tuple(maps),
        missing_marks=("entered_at",) if latency else (),
        cgroup_maps=tuple(maps),
        defines=("KPOD_SYSCALL_LATENCY",) if latency else (),
    )


class SyscallCollector(BpfCollector):
    name = "syscall"

    def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
        return syscall_spec(env.syscall_latency)

    @property
    def latency_enabled(self) -> bool:
        return self._env.syscall_latency

    def instruments(self) -> Sequence[InstrumentSpec]:
        if self._env.syscall_latency:
            return specs(SYSCALL_COUNT, SYSCALL_ERRORS, SYSCALL_LATENCY)
        return specs(SYSCALL_COUNT, SYSCALL_ERRORS)

    def _read(self, owners: dict[int, Owner], snap: CollectorSnapshot) -> dict[str, set[int]]:
        counts = read_counters(self._program.table("syscalls"), ("calls", "errors"))
        for owner, (calls, errors) in group_counters(counts, owners).items():
            snap.add(owner.target_key, SYSCALL_COUNT, calls, owner.attrs())
            snap.add(owner.target_key, SYSCALL_ERRORS, errors, owner.attrs())
        keys = {"syscalls": set(counts)}
        if self._env.syscall_latency:
            hists = read_histograms(self._program.table("syscall_latency"))
            for owner, hist in group_histograms(hists, owners).items():
                snap.add_histogram(owner.target_key, to_point(SYSCALL_LATENCY, owner.attrs(), hist))
            keys["syscall_latency"] = set(hists)
        return keys
