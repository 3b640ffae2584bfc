"""The agent as `build_agent` assembles it from a profile, on this machine's real kernel."""

from __future__ import annotations

from pathlib import Path

from kpod_otel.assembly import build_agent
from kpod_otel.collectors.memory import MemoryCollector
from kpod_otel.config import parse_config
from tests.conftest import host_needs_v2, require_bcc


def test_comprehensive_profile_assembles_every_collector(tmp_path: Path) -> None:
    require_bcc()
    host_needs_v2()  # the comprehensive profile's eBPF collectors attribute by cgroup2 id
    repo = Path(__file__).resolve().parent.parent
    cfg = parse_config(f"""kpod:
  profile: comprehensive
  node-name: n
  discovery: {{mode: local}}
  bpf: {{program-dir: {repo}/ebpf}}
  cgroup: {{root: /sys/fs/cgroup, proc-root: /proc, sys-root: /sys, kubelet-root: {tmp_path}}}
  health: {{port: 0}}
""", {})
    assembled = build_agent(cfg, console=False, export=False)
    try:
        names = [c.name for c in assembled.pipeline.collectors]
        # the configuration's names; memory serves both its sources (eBPF, and the files for what eBPF
        # cannot see)
        assert names == ["cpu", "tcp", "memory", "syscall", "disk", "network", "filesystem", "agent"]
        (memory,) = [c for c in assembled.pipeline.collectors if c.name == "memory"]
        assert isinstance(memory, MemoryCollector) and memory.ebpf_loaded
        result = assembled.pipeline.collect(assembled.source.targets())
        assert result.points > 0
    finally:
        assembled.agent.close()
