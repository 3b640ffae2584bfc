"""Syscall counts per cgroup: a process making N failing and M succeeding stat() calls, against the
numbers themselves (with the process's own calls per round measured separately) and against bpftrace
counting the same cgroup over the same run; and a read() that a timer interrupts hundreds of times with
an SA_RESTART handler, which user space sees return once, without an error."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from kpod_otel.collectors.syscall import SYSCALL_COUNT, SYSCALL_ERRORS, SYSCALL_LATENCY, SyscallCollector
from tests.bpf.conftest import Cgroup, CgroupFactory, Workload, histogram, target_for, value
from tests.conftest import require

N_FAIL, M_OK = 3000, 2000

STATTER = """
for _ in range(int(sys.argv[1])):
    try:
        os.stat("/nonexistent-kpt-bpf")
    except FileNotFoundError:
        pass
for _ in range(int(sys.argv[2])):
    os.stat("/")
"""


# Blocked in read(0) for as long as the test waits, while a timer interrupts it every `argv[1]` s with a
# handler installed with SA_RESTART (signal.siginterrupt(..., False)): the kernel ends each interrupted
# read with -ERESTARTSYS (sys_exit sees it), runs the handler, and restarts the read. The read returns
# once, with the line; user space never sees an error.
RESTARTED_READ = """
import signal
signal.signal(signal.SIGALRM, lambda *_: None)
signal.siginterrupt(signal.SIGALRM, False)
signal.setitimer(signal.ITIMER_REAL, float(sys.argv[1]), float(sys.argv[1]))
assert sys.stdin.readline() == "line\\n"
signal.setitimer(signal.ITIMER_REAL, 0, 0)
"""


def counts_of_one_round(collector: SyscallCollector, cg: Cgroup, n_fail: int, m_ok: int) -> tuple[int, int]:
    t = target_for("x", cg)
    w = Workload(STATTER, str(n_fail), str(m_ok))
    try:
        cg.add(w.pid)
        w.run()
        snap = collector.collect([t])
    finally:
        w.stop()
    return int(value(snap, t, SYSCALL_COUNT)), int(value(snap, t, SYSCALL_ERRORS))


def restarted_read(collector: SyscallCollector, cg: Cgroup, interval: str, oracle: Bpftrace | None = None
                   ) -> tuple[int, int, dict[str, int]]:
    t = target_for("r", cg)
    w = Workload(RESTARTED_READ, interval)
    try:
        cg.add(w.pid)
        w.start()
        time.sleep(0.5)
        assert w.proc.stdin is not None
        w.proc.stdin.write("line\n")
        w.proc.stdin.flush()
        w.wait()
        snap = collector.collect([t])
    finally:
        truth = oracle.stop() if oracle is not None else {}
        w.stop()
    return int(value(snap, t, SYSCALL_COUNT)), int(value(snap, t, SYSCALL_ERRORS)), truth


class Bpftrace:
    """bpftrace counting sys_exit of one cgroup: an oracle independent of our programs and loader."""

    def __init__(self, cg: Cgroup) -> None:
        prog = (
            'BEGIN { printf("ready\\n"); }\n'
            f'tracepoint:raw_syscalls:sys_exit /cgroup == cgroupid("{cg.path}")/ '
            "{ @calls = count(); if (args->ret < 0) { @negative = count(); } "
            "if (args->ret >= -516 && args->ret <= -512) { @restarts = count(); } }\n"
        )
        self.proc = subprocess.Popen(["bpftrace", "-e", prog], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.stdout.readline().strip() == "ready":
                return
        raise AssertionError("bpftrace did not start")

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(2)
        out, _ = self.proc.communicate(timeout=30)
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"@(\w+): (\d+)", out)}


def test_syscall_counts_and_errors(syscall_collector: SyscallCollector, cgroups: CgroupFactory) -> None:
    require(shutil.which("bpftrace") is not None, "needs bpftrace (the oracle)")
    # The workload's own calls per round (the stdin read, the 'done' write...), measured separately.
    base_calls, base_errors = counts_of_one_round(syscall_collector, cgroups.make("sc-base"), 0, 0)
    a, b = cgroups.make("sc-a"), cgroups.make("sc-b")
    ta, tb = target_for("a", a), target_for("b", b)
    oracle = Bpftrace(a)
    wa, wb = Workload(STATTER, str(N_FAIL), str(M_OK)), Workload(STATTER, "10", "20")
    try:
        a.add(wa.pid)
        b.add(wb.pid)
        wa.run()
        wb.run()
        snap = syscall_collector.collect([ta, tb])
    finally:
        truth = oracle.stop()
        wa.stop()
        wb.stop()
    calls, errors = value(snap, ta, SYSCALL_COUNT), value(snap, ta, SYSCALL_ERRORS)
    assert errors == N_FAIL + base_errors
    assert 0 <= calls - (N_FAIL + M_OK + base_calls) <= 5  # allocator calls (brk/mmap) at most
    assert calls == truth["calls"]
    assert errors == truth.get("negative", 0) - truth.get("restarts", 0)
    b_calls, b_errors = value(snap, tb, SYSCALL_COUNT), value(snap, tb, SYSCALL_ERRORS)
    assert b_errors == 10 + base_errors
    assert 0 <= b_calls - (30 + base_calls) <= 5
    h = histogram(snap, ta, SYSCALL_LATENCY)  # comprehensive profile: latency on
    assert h is not None and sum(h.bucket_counts) == h.count
    assert calls - 2 <= h.count <= calls  # every completed call has a latency (minus the unpaired first)


@pytest.mark.parametrize("interval", ["0.002"])
def test_restarted_calls_are_not_errors(syscall_collector: SyscallCollector, cgroups: CgroupFactory,
                                        interval: str) -> None:
    require(shutil.which("bpftrace") is not None, "needs bpftrace (the oracle)")
    # The same process without the timer: its own calls and errors (the interpreter's start-up is over).
    base_calls, base_errors, _ = restarted_read(syscall_collector, cgroups.make("rs-base"), "0")
    cg = cgroups.make("rs")
    calls, errors, truth = restarted_read(syscall_collector, cg, interval, Bpftrace(cg))
    restarts = truth.get("restarts", 0)
    assert restarts >= 50  # ~250 ticks in 0.5 s: the read really was interrupted, many times
    assert errors == base_errors == truth.get("negative", 0) - restarts  # none seen by the program
    # Every interruption is two exits: the read's -ERESTARTSYS and the handler's rt_sigreturn.
    assert 0 <= calls - (base_calls + 2 * restarts) <= 5
