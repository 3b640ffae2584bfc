#!/usr/bin/env python3
"""Added cost per event of the kpod eBPF programs, per hook, measured in one run.

For each hook: the workload with no program, with an empty program on the same hook, and with ours
(the real collector, loaded as the agent loads it). Prints ns per event for all three, the cost each
program adds, and the ratio ours/empty of the added costs. Needs root, bcc and gcc (for the workload,
so that interpreter noise does not drown nanoseconds).

    sudo .venv/bin/python bench/ebpf_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kpod_otel.assembly import bpf_environment, cgroup_fs  # noqa: E402
from kpod_otel.bpf import syscalls  # noqa: E402
from kpod_otel.bpf.cgroupv2 import find_cgroup2_root  # noqa: E402
from kpod_otel.bpf.collector import BpfCollector  # noqa: E402
from kpod_otel.bpf.fdinfo import parse_prog_fdinfo  # noqa: E402
from kpod_otel.collectors.cpu_sched import CpuSchedCollector  # noqa: E402
from kpod_otel.collectors.syscall import SyscallCollector  # noqa: E402
from kpod_otel.collectors.tcp import TcpCollector  # noqa: E402
from kpod_otel.config import BpfConfig, CgroupConfig, Config, DiscoveryConfig, DiscoveryMode, Profile  # noqa: E402
from kpod_otel.selfmetrics import AgentStats  # noqa: E402

WORKLOAD_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec; }
static void pin(int cpu) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); sched_setaffinity(0, sizeof s, &s); }
int main(int argc, char **argv) {
  long n = atol(argv[2]); long long t0, t1; char c = 'x';
  if (!strcmp(argv[1], "switch")) {           /* pipe ping-pong on one CPU: 2 switches per round */
    int a[2], b[2]; pipe(a); pipe(b); pin(0);
    if (fork() == 0) { for (long i = 0; i < n; i++) { read(a[0], &c, 1); write(b[1], &c, 1); } _exit(0); }
    t0 = now(); for (long i = 0; i < n; i++) { write(a[1], &c, 1); read(b[0], &c, 1); } t1 = now();
    wait(NULL); printf("%lld %ld\n", t1 - t0, 2 * n);
  } else if (!strcmp(argv[1], "syscall")) {   /* one sys_enter + sys_exit per call */
    t0 = now(); for (long i = 0; i < n; i++) syscall(SYS_getppid); t1 = now();
    printf("%lld %ld\n", t1 - t0, n);
  } else {                  /* 64-byte TCP messages over loopback; events = segments, counted outside */
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1; struct sockaddr_in sa = {0}; socklen_t len = sizeof sa;
    sa.sin_family = AF_INET; sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(l, (void *)&sa, sizeof sa); listen(l, 1); getsockname(l, (void *)&sa, &len);
    if (fork() == 0) { int s = accept(l, NULL, NULL); char buf[65536];
                       while (read(s, buf, sizeof buf) > 0); _exit(0); }
    int s = socket(AF_INET, SOCK_STREAM, 0); connect(s, (void *)&sa, sizeof sa);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); char msg[64] = {0};
    t0 = now(); for (long i = 0; i < n; i++) write(s, msg, sizeof msg); t1 = now();
    close(s); wait(NULL); printf("%lld 0\n", t1 - t0);
  }
  return 0;
}
"""

EMPTY_TRACEPOINT = "TRACEPOINT_PROBE(%s, %s) { return 0; }\n"
EMPTY_SKB = "int empty(struct __sk_buff *skb) { return 1; }\n"


def tcp_out_segments() -> int:
    """OutSegs of this netns: on loopback every segment leaves one socket and enters another, i.e. one
    cgroup_skb egress run plus one ingress run."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


def measure(binary: Path, mode: str, n: int, rounds: int) -> float:
    """ns per event: per context switch, per syscall, or per TCP segment."""
    samples = []
    for _ in range(rounds):
        segs = tcp_out_segments()
        out = subprocess.run([str(binary), mode, str(n)], check=True, capture_output=True, text=True).stdout
        elapsed, events = (int(x) for x in out.split())
        if mode == "tcp":
            events = tcp_out_segments() - segs
        samples.append(elapsed / events)
    return statistics.median(samples)


def with_empty_tracepoints(tps: list[tuple[str, str]], fn: Callable[[], float]) -> float:
    from bcc import BPF

    b = BPF(text="".join(EMPTY_TRACEPOINT % tp for tp in tps).encode())
    try:
        return fn()
    finally:
        b.cleanup()


def with_empty_cgroup_skb(fn: Callable[[], float]) -> float:
    from bcc import BPF

    b = BPF(text=EMPTY_SKB.encode())
    prog = b.load_func(b"empty", BPF.CGROUP_SKB)
    root = find_cgroup2_root("/sys/fs/cgroup")
    if root is None:
        raise SystemExit("no cgroup v2 hierarchy")
    cg = os.open(root, os.O_RDONLY)
    links = [syscalls.link_create(prog.fd, cg, t) for t in (syscalls.CGROUP_INET_INGRESS,
                                                            syscalls.CGROUP_INET_EGRESS)]
    try:
        return fn()
    finally:
        for fd in links:
            os.close(fd)
        os.close(cg)
        b.cleanup()


def with_ours(cls: type[BpfCollector], config: Config, fn: Callable[[], float]) -> float:
    c = cls(AgentStats(), bpf_environment(config, cgroup_fs(config)))
    if not c.available:
        raise SystemExit(f"{cls.__name__}: {c.unavailable_reason}")
    try:
        return fn()
    finally:
        c.close()


def with_ours_on_pods_cgroup(config: Config, fn: Callable[[], float]) -> float:
    """The TCP programs attached as on a Kubernetes node, to a pods cgroup (a fresh v2 cgroup standing for
    kubepods), while the workload runs outside it, like the node's own daemons."""
    env = bpf_environment(config, cgroup_fs(config))
    assert env.cgroup2_root is not None
    pods = env.cgroup2_root / f"kpt-bpf-bench-pods-{os.getpid()}"
    pods.mkdir()
    try:
        c = TcpCollector(AgentStats(), dataclasses.replace(env, attach_cgroup=pods, said=set()))
        if not c.available:
            raise SystemExit(f"TcpCollector: {c.unavailable_reason}")
        try:
            return fn()
        finally:
            c.close()
    finally:
        pods.rmdir()


def kernel_run_times(cls: type[BpfCollector], config: Config, fn: Callable[[], float]) -> str:
    """ns per run of each of our BPF functions as the kernel measures it (bpf_stats on while loaded)."""
    stats_config = Config(profile=config.profile, cgroup=config.cgroup, discovery=config.discovery,
                          bpf=BpfConfig(program_dir=config.bpf.program_dir, enable_stats=True))
    c = cls(AgentStats(), bpf_environment(stats_config, cgroup_fs(stats_config)))
    try:
        fn()
        parts = []
        for name, func in c._program.bpf.funcs.items():
            parsed = parse_prog_fdinfo(Path(f"/proc/self/fdinfo/{func.fd}").read_text())
            if parsed and parsed.run_cnt:
                short = name.decode().removeprefix("tracepoint__").replace("__", ":")
                parts.append(f"{short} {parsed.run_time_ns / parsed.run_cnt:.0f} ns x {parsed.run_cnt}")
        return "; ".join(parts)
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    # Local mode: the TCP programs attach at the v2 root, so the workload's sockets pass them (the
    # "outside pods" case attaches them below a pods cgroup explicitly).
    base = dict(cgroup=CgroupConfig(root="/sys/fs/cgroup"), bpf=BpfConfig(program_dir=str(REPO / "ebpf")),
                discovery=DiscoveryConfig(mode=DiscoveryMode.LOCAL))
    standard = Config(profile=Profile.STANDARD, **base)  # type: ignore[arg-type]
    comprehensive = Config(profile=Profile.COMPREHENSIVE, **base)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="kpt-bpf-bench-") as tmp:
        src, binary = Path(tmp, "w.c"), Path(tmp, "w")
        src.write_text(WORKLOAD_C)
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(src)], check=True)
        cases = [
            ("sched_switch (+wakeups)", "switch", 200_000,
             [("sched", "sched_switch"), ("sched", "sched_wakeup"), ("sched", "sched_wakeup_new")],
             lambda fn: with_ours(CpuSchedCollector, standard, fn)),
            ("sys_exit (count+errors)", "syscall", 2_000_000, [("raw_syscalls", "sys_exit")],
             lambda fn: with_ours(SyscallCollector, standard, fn)),
            ("sys_enter+sys_exit (+latency)", "syscall", 2_000_000,
             [("raw_syscalls", "sys_enter"), ("raw_syscalls", "sys_exit")],
             lambda fn: with_ours(SyscallCollector, comprehensive, fn)),
            ("cgroup_skb (per TCP segment)", "tcp", 500_000, None,
             lambda fn: with_ours(TcpCollector, standard, fn)),
            ("cgroup_skb, socket outside pods", "tcp", 500_000, None,
             lambda fn: with_ours_on_pods_cgroup(standard, fn)),
        ]
        owners = {
            "sched_switch (+wakeups)": (CpuSchedCollector, standard),
            "sys_exit (count+errors)": (SyscallCollector, standard),
            "sys_enter+sys_exit (+latency)": (SyscallCollector, comprehensive),
            "cgroup_skb (per TCP segment)": (TcpCollector, standard),
        }
        kernel: list[tuple[str, object]] = []
        print(f"{'hook':34} {'none ns':>9} {'empty ns':>9} {'ours ns':>9} {'+empty':>8} {'+ours':>8} "
              f"{'ours/empty':>10}")
        for label, mode, n, tps, ours in cases:
            # Interleaved rounds (none, empty, ours, none, ...) so that drift on a shared machine hits
            # all three alike; medians of the rounds.
            def once(mode: str = mode, n: int = n) -> float:
                return measure(binary, mode, n, 1)

            nones, empties, mines = [], [], []
            for _ in range(args.rounds):
                nones.append(once())
                empties.append(with_empty_tracepoints(tps, once) if tps else with_empty_cgroup_skb(once))
                mines.append(ours(once))
            none, empty, mine = (statistics.median(v) for v in (nones, empties, mines))
            added_empty, added_ours = empty - none, mine - none
            ratio = added_ours / added_empty if added_empty > 0 else float("nan")
            print(f"{label:34} {none:9.1f} {empty:9.1f} {mine:9.1f} {added_empty:8.1f} {added_ours:8.1f} "
                  f"{ratio:10.2f}", flush=True)
            kernel.append((label, ours))
        print("\nin-kernel run time of our programs (bpf_stats, one more run each):")
        for (label, mode, n, _, _), (_, _) in zip(cases, kernel, strict=True):
            if label not in owners:
                continue  # outside the pods cgroup: the programs do not run at all
            cls, config = owners[label]

            def once_more(mode: str = mode, n: int = n) -> float:
                return measure(binary, mode, n, 1)

            print(f"  {label:32} {kernel_run_times(cls, config, once_more)}", flush=True)

if __name__ == "__main__":
    main()
