"""Least privilege and safety, with the agent as a subprocess (eBPF loaded, debug logging):
- no node-global setting changes unless configured: `kernel.bpf_stats_enabled` stays as it was, and with
  `bpf.enable-stats: true` it is on only while the agent runs;
- it never writes into the cgroups, /proc or namespaces it observes: strace audits every open/create/
  remove under /sys and /proc; the pod's cgroup directories and network namespace are compared before/after;
- OTLP headers and the API token never appear in its logs (they do reach the servers: the test sees them);
- the health endpoint shows no configuration secrets."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.cgroup.conftest import CGROUP_ROOT, HIERARCHIES, require_cgroups
from tests.conftest import require, require_bcc
from tests.reliability.agentproc import AgentProcess
from tests.reliability.node import FakeNode, LivePod
from tests.test_e2e_discovery import TOKEN

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
OTLP_SECRET = "kpt-rel-otlp-secret-7f3a9c"
API_KEY_SECRET = "kpt-rel-api-key-secret-2b8e"
# Syscalls that create, change or remove files; openat is checked for write flags.
AUDITED = "openat,open,creat,truncate,mkdir,mkdirat,rmdir,unlink,unlinkat,rename,renameat,renameat2,link," \
          "linkat,symlink,symlinkat,chmod,fchmodat,chown,fchownat,lchown,mknod,mknodat"
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def bpf_stats_enabled() -> int:
    return int(BPF_STATS.read_text())


class StatsProbe:
    """A BPF program of the test's own on every syscall: the kernel counts its runs (fdinfo run_cnt) only
    while BPF run-time statistics are on node-wide — by the sysctl or by a BPF_ENABLE_STATS fd, which the
    sysctl does not show. So it tells whether anyone turned them on."""

    def __init__(self) -> None:
        from bcc import BPF

        self._bpf = BPF(text=b"TRACEPOINT_PROBE(raw_syscalls, sys_enter) { return 0; }")
        self._fd = next(iter(self._bpf.funcs.values())).fd

    def run_cnt(self) -> int:
        from kpod_otel.bpf.fdinfo import parse_prog_fdinfo

        parsed = parse_prog_fdinfo(Path(f"/proc/self/fdinfo/{self._fd}").read_text())
        assert parsed is not None
        return parsed.run_cnt

    def counting(self) -> bool:
        before = self.run_cnt()
        for _ in range(50):
            os.getppid()
        time.sleep(0.05)
        return self.run_cnt() > before

    def close(self) -> None:
        self._bpf.cleanup()


def write_accesses(strace_log: str) -> list[str]:
    """Calls that write, create or remove anything under /sys or /proc (the observed kernel objects)."""
    bad = []
    for line in strace_log.splitlines():
        m = re.search(r"(\w+)\((.*)", line)
        if not m or ("/sys/" not in line and "/proc/" not in line):
            continue
        call, args = m.groups()
        if call in ("openat", "open"):
            flags = args.split(", ")[2 if call == "openat" else 1] if args.count(", ") >= 1 else ""
            if any(f in flags for f in _WRITE_FLAGS):
                bad.append(line)
        else:  # creating, removing, renaming or re-owning anything there is a write
            bad.append(line)
    return bad


def cgroup_state(pod: LivePod) -> dict[str, object]:
    """What a writer would change in the pod's cgroups: entries of each directory, and the control files
    (limits, membership) — not the statistics, which the kernel updates itself."""
    state: dict[str, object] = {}
    for rel in (pod.base, *pod.scopes):
        for h in HIERARCHIES:
            d = os.path.join(CGROUP_ROOT, h, rel)
            state[f"{d}/"] = sorted(os.listdir(d))
            for name in ("cgroup.procs", "tasks", "memory.limit_in_bytes", "memory.soft_limit_in_bytes",
                         "cpu.shares", "cpu.cfs_quota_us", "blkio.weight", "pids.max", "cgroup.subtree_control",
                         "cgroup.type", "notify_on_release"):
                f = os.path.join(d, name)
                if os.path.isfile(f):
                    with open(f) as fh:
                        state[f] = fh.read()
                    state[f + ":mtime"] = os.stat(f).st_mtime_ns
    return state


def netns_state(pid: int) -> list[str]:
    """Links (without counters), addresses and routes of the pod's netns, seen by `ip` inside it."""
    out = []
    for cmd in (["ip", "-d", "-j", "link", "show"], ["ip", "-j", "addr", "show"], ["ip", "-j", "route", "show"]):
        raw = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", *cmd], capture_output=True, text=True,
                             check=True).stdout
        data = json.loads(raw)
        for item in data:
            item.pop("stats64", None)
            item.pop("stats", None)
        out.append(json.dumps(data, sort_keys=True))
    return out


def test_no_writes_no_global_changes_no_secrets_in_logs(tmp_path: Path) -> None:
    require_cgroups()
    require_bcc()
    require(shutil.which("strace") is not None, "needs strace")
    node = FakeNode.start(tmp_path)
    agent = None
    agent_pid = 0  # the agent under strace (strace's child)
    try:
        pod = node.add_pod("kpt-rel-observed", netns=True)
        time.sleep(0.3)  # the container set up its namespace
        probe = StatsProbe()
        require(not probe.counting(), "BPF run-time statistics are on already (another process holds them)")
        stats_before = bpf_stats_enabled()
        cg_before, ns_before = cgroup_state(pod), netns_state(pod.procs[0].pid)
        env = node.env()
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"authorization=Bearer%20{OTLP_SECRET},x-api-key={API_KEY_SECRET}"
        trace = tmp_path / "strace.log"
        cfg = node.config(interval_ms=1000)
        agent = AgentProcess(["strace", "-f", "-qq", "--seccomp-bpf", "-e", f"trace={AUDITED}", "-o", str(trace),
                              sys.executable, "-m", "kpod_otel", "--log-level", "debug", "run", "--config",
                              str(cfg)], env)
        agent.proc = subprocess.Popen(agent.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
        threading.Thread(target=agent._drain, daemon=True).start()
        children_file = Path(f"/proc/{agent.pid}/task/{agent.pid}/children")
        deadline = time.monotonic() + 30
        while not children_file.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.02)
        children = children_file.read_text().split()
        assert len(children) == 1
        agent_pid = int(children[0])
        got = node.receiver.wait_for(3, timeout=90)  # three cycles with the pod measured
        assert any(pod.uid in r.request.SerializeToString().decode("latin-1") for r in got)
        stats_during = bpf_stats_enabled()
        counting_during = probe.counting()
        probe.close()
        # SIGTERM to the agent itself (strace's child), as the kubelet would; strace exits with it
        os.kill(agent_pid, signal.SIGTERM)
        assert agent.proc is not None
        assert agent.proc.wait(timeout=30) == 0, agent.stderr()[-3000:]
        log = agent.stderr()

        # the node-global BPF statistics switch was left alone
        assert stats_during == stats_before and bpf_stats_enabled() == stats_before
        assert not counting_during
        # eBPF really ran (so the audit covers loading and attaching)
        assert "not loaded" not in log and "eBPF metrics are off" not in log
        # nothing under /sys or /proc was opened for writing, created or removed
        audit = trace.read_text()
        assert "/sys/fs/cgroup" in audit and f"/proc/{pod.procs[0].pid}" in audit  # the audit saw the reads
        assert write_accesses(audit) == []
        assert cgroup_state(pod) == cg_before
        assert netns_state(pod.procs[0].pid) == ns_before
        # secrets reached the servers but never the log, even at debug level
        assert node.receiver.received[0].headers.get("x-api-key") == API_KEY_SECRET
        assert any(r.auth_ok for r in node.api.requests)
        assert "DEBUG" in log
        for secret in (OTLP_SECRET, API_KEY_SECRET, TOKEN):
            assert secret not in log
    finally:
        if agent_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent_pid, signal.SIGKILL)  # killing strace alone would leave the agent running
        if agent is not None:
            agent.kill()
        node.close()


def test_bpf_stats_only_while_configured(tmp_path: Path) -> None:
    require_cgroups()
    require_bcc()
    node = FakeNode.start(tmp_path)
    agent = None
    probe = StatsProbe()
    try:
        require(not probe.counting(), "BPF run-time statistics are on already (another process holds them)")
        node.add_pod("kpt-rel-stats")
        cfg = node.config(interval_ms=1000, extra="  bpf:\n    enabled: true\n    enable-stats: true\n")
        cfg.write_text(cfg.read_text().replace("  bpf:\n    enabled: true\n  cgroup", "  cgroup"))
        agent = AgentProcess.run(cfg, node.env())
        node.receiver.wait_for(2, timeout=90)
        assert probe.counting()  # on while the agent runs, as configured ...
        code, _ = agent.terminate()
        assert code == 0, agent.stderr()[-3000:]
        assert not probe.counting()  # ... and off again once it is gone
    finally:
        probe.close()
        if agent is not None:
            agent.kill()
        node.close()


def test_health_endpoint_shows_no_configuration_secrets(tmp_path: Path) -> None:
    from kpod_otel import health
    from kpod_otel.assembly import build_agent
    from kpod_otel.config import parse_config

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://192.0.2.1:6443", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: "{TOKEN}"}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    config = parse_config(f"""kpod:
  profile: custom
  node-name: kpt-rel-node
  collectors: {{disk: {{enabled: true}}}}
  discovery: {{mode: informer, kubeconfig: {kubeconfig}}}
  bpf: {{enabled: false}}
  cgroup: {{root: /sys/fs/cgroup, proc-root: /proc, sys-root: /sys}}
""", env={})
    assembled = build_agent(config, console=False, export=False)
    # the agent's own health state, served as the agent serves it (discovery is never started: no
    # traffic goes to the kubeconfig's address)
    server = health.HealthServer(assembled.agent.health, "127.0.0.1", 0)
    server.start()
    try:
        assembled.agent.run_cycle()
        bodies = []
        for path in ("/healthz", "/readyz", "/", "/config", "/debug", "/metrics", "/healthz?verbose=1"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as resp:
                    bodies.append(resp.read().decode())
            except urllib.error.HTTPError as exc:
                bodies.append(exc.read().decode())
        text = "\n".join(bodies)
        for secret in (TOKEN, str(kubeconfig), "192.0.2.1", "/sys/fs/cgroup"):
            assert secret not in text
        assert json.loads(bodies[0]).keys() <= {"status", "cycles", "seconds_since_progress"}
    finally:
        server.stop()
        assembled.agent.close()
