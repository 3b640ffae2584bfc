"""OOM kills per container from `ebpf/mem.c`, charged to the victim.

The eBPF source of the `memory` collector (`kpod_otel.collectors.memory.MemoryCollector`). Its count and
the memory cgroup's `oom_kill` (`memory.events` v2 / `memory.oom_control` v1) count the same kills: the
program counts a victim only when the OOM killer sent it SIGKILL (see mem.c). Major page faults have one
source, `memory.stat` `pgmajfault`, read by the memory collector for every container (docs/ebpf.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from kpod_otel.bpf.attribution import Owner, group_counters
from kpod_otel.bpf.collector import BpfCollector
from kpod_otel.bpf.maps import read_counters
from kpod_otel.bpf.program import BpfEnvironment, ProgramSpec
from kpod_otel.bpf.tracefs import TracepointNeed
from kpod_otel.catalog import specs
from kpod_otel.collector import CollectorSnapshot, InstrumentSpec

OOM_KILLS = "kpod.mem.oom.kills"
MAJOR_FAULTS = "kpod.mem.major.page.faults"

SPEC = ProgramSpec(
    name="mem",
    tracepoints=(
        TracepointNeed("oom", "mark_victim", ("pid",)),
        TracepointNeed("sched", "sched_process_exit", ("pid",)),
        TracepointNeed("signal", "signal_generate", ("sig", "code", "pid")),
    ),
    failure_maps=("oom_kills", "oom_victims"),
    cgroup_maps=("oom_kills",),
)


class MemoryBpfCollector(BpfCollector):
    name = "memory"

    def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
        return SPEC

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(OOM_KILLS)

    def _read(self, owners: dict[int, Owner], snap: CollectorSnapshot) -> dict[str, set[int]]:
        kills = read_counters(self._program.table("oom_kills"), ())
        for owner, (value,) in group_counters(kills, owners).items():
            snap.add(owner.target_key, OOM_KILLS, value, owner.attrs())
        return {"oom_kills": set(kills)}
