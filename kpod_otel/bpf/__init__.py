"""eBPF with bcc: loading the programs of `ebpf/` and reading their per-cgroup maps.

`build_bpf_collectors(config, stats)` is the agent's entry point: it resolves the node's eBPF support
once, says once and clearly when eBPF cannot run (the agent then runs with the cgroup collectors only),
and returns the enabled eBPF collectors (each loads and attaches its own program; one failing does not
affect the others).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kpod_otel.bpf.collector import BpfCollector
    from kpod_otel.config import Config
    from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)


def build_bpf_collectors(config: Config, stats: AgentStats) -> list[BpfCollector]:
    """The eBPF collectors enabled by the profile ("cpu", "tcp", "memory", "syscall")."""
    from kpod_otel.bpf.program import BpfEnvironment
    from kpod_otel.collectors.cpu_sched import CpuSchedCollector
    from kpod_otel.collectors.mem_bpf import MemoryBpfCollector
    from kpod_otel.collectors.syscall import SyscallCollector
    from kpod_otel.collectors.tcp import TcpCollector

    enabled = config.enabled_collectors()
    classes: list[type[BpfCollector]] = [
        cls for key, cls in (("cpu", CpuSchedCollector), ("tcp", TcpCollector),
                             ("memory", MemoryBpfCollector), ("syscall", SyscallCollector))
        if key in enabled
    ]
    if not classes:
        return []
    env = BpfEnvironment.from_config(config)
    if env.unavailable:
        log.warning("eBPF metrics are off: %s. Running with the cgroup collectors only.", env.unavailable)
        stats.error("bpf", "unavailable")
        return []
    collectors = [cls(config, stats, env) for cls in classes]
    from kpod_otel.bpf.compiler_memory import release_compiler_memory

    release_compiler_memory()  # the programs are loaded: the compiler's memory is not needed any more
    return collectors
