"""Agent memory and start-up, measured on `kpod-otel run` as a subprocess (run as root).

    .venv/bin/python bench/agent_memory.py [--pods 110] [--lifecycles 10000] [--churn 100] [--temporality delta]

1. Start-up to first export: wall time from just before the `kpod-otel run` process is spawned to the
   arrival of its first OTLP request at the receiver (the receiver stamps arrivals in its own process).
   Comprehensive profile: the four eBPF programs are compiled and loaded before the first cycle.
2. Steady state: 110 real pods (bench/node_env.py: sandbox + 3 containers each, every container
   process forking `sleep 2` in a loop so the cpu/syscall/memory eBPF maps fill by themselves; one
   netns and two tmpfs volumes per pod), comprehensive profile, 1 s interval; VmRSS of the agent after
   10 exports (VmHWM, the peak, is printed too: it includes the compilation of the programs).
3. Pod churn: `--lifecycles` pods, `--churn` at a time, are created (cgroups in v1 blkio/memory/cpu/pids
   + unified: pod slice, sandbox and 3 container scopes, no processes), announced by the fake API
   server (ADDED on the agent's watch), measured by at least one export, deleted (DELETED event) and
   their cgroups removed. Each round waits for one export between adding and deleting. Churn pods have
   no netns/volumes/processes (creating 10,000 of those takes far longer than 5 minutes); they go
   through discovery, the mapper, every collector's attribution and the encoder like real pods.
   RSS is read after the first 10 % of the lifecycles (allocator and caches warm) and at the end, with
   only the 110 steady pods left, after 3 more exports.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.node_env import NodePods, ServerProcess, agent_yaml, leftovers

REPO = Path(__file__).resolve().parent.parent


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found")


def memory_breakdown(pid: int) -> str:
    """RssAnon/RssFile from status, Pss from smaps_rollup (file pages shared with other processes, such
    as LLVM's when another bcc process runs on the machine, count fully in RSS but not in Pss)."""
    parts = [f"{f} {rss_kb(pid, f) / 1024:.1f} MB" for f in ("RssAnon", "RssFile")]
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Pss:", "Pss_Anon:", "Pss_File:")):
                name, kb = line.split()[:2]
                parts.append(f"{name.rstrip(':')} {int(kb) / 1024:.1f} MB")
    return ", ".join(parts)


def other_llvm_users(pid: int) -> int:
    """Other processes mapping libLLVM: while there are any, LLVM's pages are shared, count in everyone's
    RSS, and the agent's MADV_PAGEOUT after compiling cannot reclaim them."""
    users = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                if "libLLVM" in f.read():
                    users += 1
        except OSError:
            continue
    return users


def private_llvm_mapped(pid: int, workdir: Path) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return str(workdir / "lib") in f.read()


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def open_fds(pid: int) -> int:
    """The agent's open file descriptors (kept cgroup files among them: they must follow the pods)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_exports(server: ServerProcess, count: int, agent: subprocess.Popen[bytes], timeout: float = 120) -> int:
    """Wait until `count` more requests arrived; returns the new total."""
    start = server.received()["arrivals"]
    deadline = time.monotonic() + timeout
    while True:
        now = server.received()["arrivals"]
        if now >= start + count:
            return int(now)
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited with {agent.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{now - start} of {count} exports in {timeout} s")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--lifecycles", type=int, default=10000)
    ap.add_argument("--churn", type=int, default=100, help="pods created and deleted per round")
    ap.add_argument("--profile", default="comprehensive")
    ap.add_argument("--private-llvm", action="store_true",
                    help="give the agent its own copy of libLLVM/libclang (LD_LIBRARY_PATH), as on a node where "
                         "no other process maps them, so that their pages are not shared with other bcc users")
    ap.add_argument("--temporality", default="cumulative", choices=["cumulative", "delta", "lowmemory"],
                    help="the agent's OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="run the agent with KPOD_TRACEMALLOC=FRAMES and signal it (SIGUSR1) before the churn, after "
                         "--trace-at lifecycles and at the end: its log gets the allocation sites that grew in between")
    ap.add_argument("--trace-at", type=int, default=0, metavar="LIFECYCLES",
                    help="lifecycles before the first allocation dump (default: the first 10 %%)")
    args = ap.parse_args()

    node = NodePods()
    workdir = Path(tempfile.mkdtemp(prefix="kpt-bench-srv-"))
    server = ServerProcess(workdir)
    agent: subprocess.Popen[bytes] | None = None
    log_path = workdir / "agent.log"
    try:
        t = time.monotonic()
        steady = node.add(args.pods, busy=True)
        server.add(steady)
        print(f"node: {args.pods} pods ready in {time.monotonic() - t:.1f} s", flush=True)
        cfg = workdir / "kpod.yaml"
        cfg.write_text(agent_yaml(server, node.kubelet_root, args.profile, interval_ms=1000))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_", "KUBERNETES_"))}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = server.endpoint
        env["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = args.temporality
        if args.tracemalloc:
            env["KPOD_TRACEMALLOC"] = str(args.tracemalloc)
        if args.private_llvm:
            libdir = workdir / "lib"
            libdir.mkdir()
            for lib in ("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1", "/usr/lib/llvm-14/lib/libclang-cpp.so.14"):
                shutil.copy(lib, libdir / os.path.basename(lib))
            env["LD_LIBRARY_PATH"] = str(libdir)
        with open(log_path, "wb") as log:
            spawned = time.monotonic()
            agent = subprocess.Popen([sys.executable, "-m", "kpod_otel", "run", "--config", str(cfg)],
                                     env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wait_exports(server, 1, agent)
        while server.received()["first"] is None:  # the receiver records it a moment after counting it
            time.sleep(0.01)
        first = server.received()["first"]
        startup = first - spawned
        print(f"start-up to first export: {startup:.2f} s", flush=True)

        wait_exports(server, 10, agent)
        steady_rss = rss_kb(agent.pid)
        hwm = rss_kb(agent.pid, "VmHWM")
        steady_threads = threads(agent.pid)
        steady_fds = open_fds(agent.pid)
        print(f"other processes mapping libLLVM right now: {other_llvm_users(agent.pid)}"
              + (f" (the agent maps its own copies: {private_llvm_mapped(agent.pid, workdir)})"
                 if args.private_llvm else ""), flush=True)
        print(f"steady state, {args.pods} pods, {args.profile}: RSS {steady_rss / 1024:.1f} MB "
              f"(peak VmHWM {hwm / 1024:.1f} MB), {steady_threads} threads, {steady_fds} open fds; "
              f"{memory_breakdown(agent.pid)}", flush=True)
        server.take_requests()
        if args.tracemalloc:
            agent.send_signal(signal.SIGUSR1)  # tracing starts here
            wait_exports(server, 2, agent)

        rounds = max(1, args.lifecycles // args.churn)
        trace_round = max(1, (args.trace_at or args.lifecycles // 10) // args.churn)
        warm_rss = None
        t = time.monotonic()
        for r in range(rounds):
            batch = node.add(args.churn, light=True)
            server.add(batch)
            wait_exports(server, 1, agent)  # the pods were measured by at least one cycle
            server.delete(batch)
            for pod in batch:
                node.remove(pod)
            if r % 10 == 9:
                server.take_requests()  # the receiver keeps what it got: drop it
            if r + 1 == max(1, rounds // 10):
                wait_exports(server, 2, agent)
                warm_rss = rss_kb(agent.pid)
                print(f"after {(r + 1) * args.churn} lifecycles: RSS {warm_rss / 1024:.1f} MB", flush=True)
            if args.tracemalloc and r + 1 == trace_round:
                wait_exports(server, 2, agent)
                agent.send_signal(signal.SIGUSR1)
                print(f"after {(r + 1) * args.churn} lifecycles: allocation dump requested "
                      f"(RSS {rss_kb(agent.pid) / 1024:.1f} MB)", flush=True)
        wait_exports(server, 3, agent)
        end_rss = rss_kb(agent.pid)
        end_threads = threads(agent.pid)
        end_fds = open_fds(agent.pid)
        print(f"after {rounds * args.churn} lifecycles ({time.monotonic() - t:.0f} s): RSS {end_rss / 1024:.1f} MB, "
              f"{end_threads} threads, {end_fds} open fds; {memory_breakdown(agent.pid)}", flush=True)
        if args.tracemalloc:
            agent.send_signal(signal.SIGUSR1)
            wait_exports(server, 1, agent)
            print(log_path.read_text()[log_path.read_text().find("tracemalloc dump"):], flush=True)
        print()
        print(f"start-up to first export      {startup:6.2f} s   (target <= 10 s)")
        print(f"RSS steady, {args.pods} pods          {steady_rss / 1024:6.1f} MB  (target <= 180 MB); "
              f"peak {hwm / 1024:.1f} MB")
        print(f"RSS growth, {rounds * args.churn} lifecycles  {(end_rss - steady_rss) / 1024:+6.1f} MB  "
              f"(target <= 10 MB); vs after the first 10 %: {(end_rss - (warm_rss or steady_rss)) / 1024:+.1f} MB; "
              f"threads {steady_threads} -> {end_threads}")
        print(f"open fds, {rounds * args.churn} lifecycles  {steady_fds} -> {end_fds}")
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        server.stop()
        node.cleanup()
        left = leftovers(node.tag)
        if left:
            print("LEFT BEHIND:", left)
        if agent is not None and agent.returncode not in (0, None):
            print(f"agent exit code {agent.returncode}; log: {log_path}")
            print(log_path.read_text()[-3000:])
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
