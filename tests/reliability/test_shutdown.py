"""SIGTERM while discovery is stuck in a slow LIST: the agent still ends well within Kubernetes' 30 s
grace period, attempts a final export, and leaves no BPF program behind (bpftool before/after)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from kpod_otel.bpf.cgroupv2 import find_pods_cgroup
from tests.bpf.conftest import V2_ROOT
from tests.cgroup.conftest import require_cgroups
from tests.conftest import require_bcc
from tests.reliability.agentproc import AgentProcess
from tests.reliability.node import FakeNode, bpf_ids_of, loaded_prog_ids

GRACE_S = 30.0


def wait(pred: object, timeout: float, step: float = 0.05) -> bool:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def test_sigterm_during_a_slow_list(tmp_path: Path) -> None:
    require_cgroups()
    require_bcc()
    node = FakeNode.start(tmp_path)
    agent = None
    try:
        node.add_pod("kpt-rel-slow")
        node.api.delay_s = 120.0  # the API server takes two minutes to answer anything
        before = loaded_prog_ids()
        agent = AgentProcess.run(node.config(interval_ms=1000), node.env())
        # the LIST is in flight and the eBPF programs are attached
        assert wait(lambda: any(not r.is_watch for r in node.api.requests), 60), agent.stderr()
        assert wait(lambda: len(bpf_ids_of(agent.pid)[0]) >= 3, 60), agent.stderr()
        ours, _ = bpf_ids_of(agent.pid)
        assert ours <= loaded_prog_ids() and not ours & before
        # where the agent attaches its cgroup programs: kubelet's pods cgroup if this machine has one
        attach = str(find_pods_cgroup(V2_ROOT) or V2_ROOT)
        cgroup_before = subprocess.run(["bpftool", "cgroup", "show", attach],
                                       capture_output=True, text=True).stdout
        time.sleep(0.5)
        assert agent.alive()
        code, elapsed = agent.terminate(timeout=GRACE_S + 10)
        assert code == 0, agent.stderr()
        # ~6 s measured (5 s of it stopping discovery with the LIST in flight); waiting out the start-up
        # discovery wait (10 s) as well would take ~16 s
        assert elapsed < 12, (elapsed, agent.stderr())
        # a final export was attempted (the receiver got it: the agent Resource, no pods yet)
        got = node.receiver.wait_for(1, timeout=5)
        assert "kpod-otel" in {a.value.string_value for r in got for rm in r.request.resource_metrics
                               for a in rm.resource.attributes if a.key == "service.name"}
        assert "final export" in agent.stderr()
        # every program the agent held is gone from the kernel, and from the cgroup attachments
        assert not ours & loaded_prog_ids()
        cgroup_after = subprocess.run(["bpftool", "cgroup", "show", attach],
                                      capture_output=True, text=True).stdout
        ids_before = {int(line.split()[0]) for line in cgroup_before.splitlines()[1:] if line.split()}
        ids_after = {int(line.split()[0]) for line in cgroup_after.splitlines()[1:] if line.split()}
        assert ids_before & ours  # the agent's cgroup_skb programs were attached there ...
        assert not ids_after & ours, (cgroup_before, cgroup_after)  # ... and are detached
        print(f"SIGTERM during a slow LIST: exit after {elapsed:.1f} s")
    finally:
        if agent is not None:
            agent.kill()
        node.close()
