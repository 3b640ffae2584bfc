"""CPU scheduling per container from `ebpf/cpu_sched.c` (`cpu`): run-queue latency and context switches."""

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

RUNQ_LATENCY = "kpod.cpu.runqueue.latency"
CONTEXT_SWITCHES = "kpod.cpu.context.switches"
SWITCH_TYPE = "kpod.switch.type"


SPEC = ProgramSpec(
    name="cpu_sched",
    tracepoints=(
        TracepointNeed("sched", "sched_switch", ("prev_pid", "prev_state", "next_pid")),
        TracepointNeed("sched", "sched_wakeup", ("pid",)),
        TracepointNeed("sched", "sched_wakeup_new", ("pid",)),
    ),
    failure_maps=("ctx_switches", "runq_latency"),
    missing_marks=("enqueued_at",),
    cgroup_maps=("ctx_switches", "runq_latency"),
)


class CpuSchedCollector(BpfCollector):
    name = "cpu"

    def program_spec(self, env: BpfEnvironment) -> ProgramSpec:
        return SPEC

    def instruments(self) -> Sequence[InstrumentSpec]:
        return specs(RUNQ_LATENCY, CONTEXT_SWITCHES)

    def _read(self, owners: dict[int, Owner], snap: CollectorSnapshot) -> dict[str, set[int]]:
        switches = read_counters(self._program.table("ctx_switches"), ("voluntary", "involuntary"))
        waits = read_histograms(self._program.table("runq_latency"))
        for owner, (voluntary, involuntary) in group_counters(switches, owners).items():
            snap.add(owner.target_key, CONTEXT_SWITCHES, voluntary, owner.attrs(**{SWITCH_TYPE: "voluntary"}))
            snap.add(owner.target_key, CONTEXT_SWITCHES, involuntary,
                     owner.attrs(**{SWITCH_TYPE: "involuntary"}))
        for owner, hist in group_histograms(waits, owners).items():
            snap.add_histogram(owner.target_key, to_point(RUNQ_LATENCY, owner.attrs(), hist))
        return {"ctx_switches": set(switches), "runq_latency": set(waits)}
