"""Memory events per container from `ebpf/mem.c`: OOM kills (charged to the victim) and major faults.

The cgroup files (`memory.events` oom_kill / `memory.oom_control` oom_kill, `memory.stat` pgmajfault)
hold the same truth and are the fallback when eBPF is off; the tests check that both sources agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from kpod_otel.bpf.attribution import Owner, group_counters
from kpod_otel.bpf.collector import BpfCollector
from kpod_otel.bpf.maps import read_counters
from kpod_otel.bpf.program import BpfEnvironment, PerfEventAttach, ProgramSpec
from kpod_otel.bpf.tracefs import CGROUP_RMDIR, TracepointNeed
from kpod_otel.collector import CollectorSnapshot, InstrumentSpec
from kpod_otel.collectors.memory_cgroup import MAJOR_FAULTS, MEMORY_INSTRUMENTS, OOM_KILLS

# One declaration for both sources of these metrics (the pipeline requires identical declarations).
INSTRUMENTS = MEMORY_INSTRUMENTS

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
    name = "memory_bpf"

    def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
        return SPEC

    def instruments(self) -> Sequence[InstrumentSpec]:
        return INSTRUMENTS

    def _read(self, owners: dict[int, Owner], snap: CollectorSnapshot) -> dict[str, set[int]]:
        kills = read_counters(self._program.table("oom_kills"), ())
        faults = read_counters(self._program.table("major_faults"), ())
        for owner, (value,) in group_counters(kills, owners).items():
            snap.add(owner.target_key, OOM_KILLS, value, owner.attrs())
        for owner, (value,) in group_counters(faults, owners).items():
            snap.add(owner.target_key, MAJOR_FAULTS, value, owner.attrs())
        return {"oom_kills": set(kills), "major_faults": set(faults)}
