"""Memory events per container from `ebpf/mem.c`: OOM kills (charged to the victim) and major faults.

The eBPF source of the `memory` collector (`kpod_otel.collectors.memory.MemoryCollector`), which falls
back to the cgroup files for what this program cannot see or when it is off.
"""

from __future__ import annotations

from collections.abc import Sequence

from kpod_otel.bpf.attribution import Owner, group_counters
from kpod_otel.bpf.collector import BpfCollector
from kpod_otel.bpf.maps import read_counters
from kpod_otel.bpf.program import BpfEnvironment, PerfEventAttach, ProgramSpec
from kpod_otel.bpf.tracefs import CGROUP_RMDIR, TracepointNeed
from kpod_otel.catalog import specs
from kpod_otel.collector import CollectorSnapshot, InstrumentSpec

OOM_KILLS = "kpod.mem.oom.kills"
MAJOR_FAULTS = "kpod.mem.major.page.faults"

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_PAGE_FAULTS_MAJ = 6

SPEC = ProgramSpec(
    name="mem",
    tracepoints=(
        TracepointNeed("oom", "mark_victim", ("pid",)),
        TracepointNeed("sched", "sched_process_exit", ("pid",)),
        CGROUP_RMDIR,
    ),
    perf_events=(PerfEventAttach("kpod_major_fault", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS_MAJ, 1),),
    failure_maps=("oom_kills", "major_faults", "oom_victims"),
    cgroup_maps=("oom_kills", "major_faults"),
)


class MemoryBpfCollector(BpfCollector):
    name = "memory"

    def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
        return SPEC

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(OOM_KILLS, MAJOR_FAULTS)

    def _read(self, owners: dict[int, Owner], snap: CollectorSnapshot) -> dict[str, set[int]]:
        kills = read_counters(self._program.table("oom_kills"), ())
        faults = read_counters(self._program.table("major_faults"), ())
        for owner, (value,) in group_counters(kills, owners).items():
            snap.add(owner.target_key, OOM_KILLS, value, owner.attrs())
        for owner, (value,) in group_counters(faults, owners).items():
            snap.add(owner.target_key, MAJOR_FAULTS, value, owner.attrs())
        return {"oom_kills": set(kills), "major_faults": set(faults)}
