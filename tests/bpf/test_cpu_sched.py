"""CPU scheduling metrics per cgroup against /proc's own per-thread counters."""

from __future__ import annotations

import os

from kpod_otel.bpf.fdinfo import parse_prog_fdinfo
from kpod_otel.collectors.cpu_sched import CONTEXT_SWITCHES, RUNQ_LATENCY, CpuSchedCollector
from tests.bpf.conftest import (
    CgroupFactory,
    Workload,
    ctx_switches_of,
    histogram,
    schedstat_of,
    target_for,
    value,
)

# Three threads sleeping n times each, then parked (alive, so /proc keeps their counters).
SLEEPER = """
import threading, time
barrier, park = threading.Barrier(4), threading.Event()
def work(n):
    for _ in range(n):
        time.sleep(0.0005)
    barrier.wait()
    park.wait()
for _ in range(3):
    threading.Thread(target=work, args=(int(sys.argv[1]),), daemon=True).start()
barrier.wait()
"""


def test_context_switches_match_proc(cpu_collector: CpuSchedCollector, cgroups: CgroupFactory) -> None:
    a, b = cgroups.make("cs-a"), cgroups.make("cs-b")
    ta, tb = target_for("a", a), target_for("b", b)
    wa, wb = Workload(SLEEPER, "200"), Workload(SLEEPER, "20")
    try:
        a.add(wa.pid)
        b.add(wb.pid)
        base_a, base_b = ctx_switches_of(wa.pid), ctx_switches_of(wb.pid)
        base_vol = ctx_switches_of(wa.pid, ("voluntary",))
        wa.run()
        wb.run()
        truth_a = ctx_switches_of(wa.pid) - base_a
        truth_b = ctx_switches_of(wb.pid) - base_b
        truth_vol = ctx_switches_of(wa.pid, ("voluntary",)) - base_vol
        snap = cpu_collector.collect([ta, tb])
    finally:
        wa.stop()
        wb.stop()
    got_a = value(snap, ta, CONTEXT_SWITCHES)
    got_b = value(snap, tb, CONTEXT_SWITCHES)
    assert truth_a > 600
    assert got_a == truth_a, (got_a, truth_a)
    assert got_b == truth_b, (got_b, truth_b)
    # By type: the kernel counts a switch as involuntary when prev was preempted; sched_switch reports
    # exactly that as a runnable prev_state. (A sleep interrupted by a pending signal would count as
    # voluntary in /proc and involuntary here; this workload gets no signals.)
    vol = value(snap, ta, CONTEXT_SWITCHES, **{"kpod.switch.type": "voluntary"})
    assert vol == truth_vol >= 600  # the sleeps


SPINNER = """
import time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


def own_recursion_misses() -> int:
    """Skipped runs of this process's BPF programs (recursion_misses in /proc/self/fdinfo, kernel >= 5.12)."""
    total = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        parsed = parse_prog_fdinfo(text) if "prog_type:" in text else None
        if parsed is not None:
            total += parsed.recursion_misses
    return total


def test_runqueue_latency_of_two_spinners_on_one_cpu(cpu_collector: CpuSchedCollector,
                                                     cgroups: CgroupFactory) -> None:
    """Truth: the scheduler's own accounting in /proc/<pid>/task/<tid>/schedstat (run_delay and the
    number of times each thread was switched in)."""
    cpu = max(os.sched_getaffinity(0))
    a, b = cgroups.make("rq-a"), cgroups.make("rq-b")
    ta, tb = target_for("a", a), target_for("b", b)
    spinners = [Workload(SPINNER, "0.3"), Workload(SPINNER, "0.3")]
    sleeper = Workload(SLEEPER, "50")
    rounds = []

    def truth() -> tuple[int, int]:
        stats = [schedstat_of(w.pid) for w in spinners]
        return sum(s[0] for s in stats), sum(s[1] for s in stats)

    try:
        for w in spinners:
            os.sched_setaffinity(w.pid, {cpu})
            a.add(w.pid)
        b.add(sleeper.pid)
        base_delay, base_arrivals = truth()
        base_b = schedstat_of(sleeper.pid)
        misses0 = own_recursion_misses()  # like the other figures, counted from the base on
        for _ in range(2):
            for w in spinners:  # both spin at the same time on the same CPU
                w.start()
            sleeper.run()
            for w in spinners:
                w.wait()
            delay, arrivals = truth()
            _, arrivals_b = schedstat_of(sleeper.pid)
            snap = cpu_collector.collect([ta, tb])
            rounds.append((delay - base_delay, arrivals - base_arrivals, arrivals_b - base_b[1],
                           histogram(snap, ta, RUNQ_LATENCY), histogram(snap, tb, RUNQ_LATENCY),
                           own_recursion_misses() - misses0))
    finally:
        for w in [*spinners, sleeper]:
            w.stop()
    for delay, arrivals, arrivals_b, h, hb, misses in rounds:
        assert h is not None and hb is not None
        print(f"waits: ours {h.count} / schedstat {arrivals}, total ours {h.sum:.6f}s / {delay / 1e9:.6f}s;"
              f" B: ours {hb.count} / schedstat {arrivals_b}; recursion misses {misses}")
        assert arrivals > 20
        # One wait per switch-in, committed at the thread's next switch-out. The kernel skips a tracing
        # program that would nest in another one on the same CPU (an interrupt waking a task while some
        # tracing program runs, more often when other BPF programs are busy on the node) and counts each
        # skip in the program's recursion_misses: a wait may be missing only for such a skip (+2 for the
        # round's edges).
        slack = misses + 2
        assert arrivals - slack <= h.count <= arrivals, (h.count, arrivals, misses)
        assert sum(h.bucket_counts) == h.count
        # The same total wait, up to the few microseconds between the wakeup tracepoint and the enqueue
        # clock per wait, and what a missed wait held.
        assert abs(h.sum - delay / 1e9) <= 0.1 * delay / 1e9 + 10e-6 * h.count
        # spinners wait for each other's time slices: millisecond waits
        assert sum(c for bound, c in zip(h.bounds, h.bucket_counts, strict=False) if bound >= 1e-3) >= 5
        # B got its own waits and none of A's (which would add hundreds)
        assert arrivals_b - slack <= hb.count <= arrivals_b, (hb.count, arrivals_b, misses)
    (_, n1, _, h1, _, _), (_, n2, _, h2, _, _) = rounds
    assert h1 is not None and h2 is not None
    assert h2.count - h1.count >= 0.95 * (n2 - n1) > 0  # the count grows with the switches
