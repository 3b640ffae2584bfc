"""Opt-in allocation tracing for memory investigations: `KPOD_TRACEMALLOC=<frames>` starts tracemalloc
with that many frames per allocation at the first SIGUSR1 (tracing from start-up slows the compilation of
the eBPF programs and the first cycles too much); every later SIGUSR1 logs the allocation sites that grew
most since the previous one and the object types whose count changed most.

Off by default: tracemalloc roughly doubles the agent's allocation cost and memory.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType

ENV = "KPOD_TRACEMALLOC"
TOP = 25

log = logging.getLogger(__name__)


def type_counts() -> Counter[str]:
    """Objects tracked by the cyclic collector (frozen ones included), by type name."""
    objects = gc.get_objects()
    counts: Counter[str] = Counter(type(o).__name__ for o in objects)
    return counts


@dataclass
class AllocationTracer:
    frames: int
    previous: tracemalloc.Snapshot | None = None
    previous_types: Counter[str] = field(default_factory=Counter)
    dumps: int = 0

    def start(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_signal)
        log.info("%s=%d: SIGUSR1 starts tracemalloc, later ones log the allocation sites that grew",
                 ENV, self.frames)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
        self.dump()

    def dump(self) -> str:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),))
        types = type_counts()
        self.dumps += 1
        traced, peak = tracemalloc.get_traced_memory()
        lines = [f"tracemalloc dump {self.dumps}: traced {traced / 2**20:.1f} MB (peak {peak / 2**20:.1f} MB), "
                 f"{sum(types.values())} gc-tracked objects"]
        if self.previous is None:
            for stat in snapshot.statistics("traceback")[:TOP]:
                lines.append(f"  {stat.size / 1024:9.1f} KB {stat.count:8d} blocks  "
                             + " <- ".join(f"{f.filename}:{f.lineno}" for f in stat.traceback))
        else:
            for diff in snapshot.compare_to(self.previous, "traceback")[:TOP]:
                lines.append(f"  {diff.size_diff / 1024:+9.1f} KB {diff.count_diff:+8d} blocks "
                             f"(now {diff.size / 1024:.1f} KB)  "
                             + " <- ".join(f"{f.filename}:{f.lineno}" for f in diff.traceback))
            changed = Counter(types)
            changed.subtract(self.previous_types)
            lines.append("  object counts that changed most:")
            for name, delta in sorted(changed.items(), key=lambda kv: -abs(kv[1]))[:TOP]:
                lines.append(f"    {delta:+8d} {name} (now {types[name]})")
        self.previous = snapshot
        self.previous_types = types
        text = "\n".join(lines)
        log.warning("%s", text)
        return text


def tracer_from_env() -> AllocationTracer | None:
    value = os.environ.get(ENV, "")
    if not value:
        return None
    try:
        frames = int(value)
    except ValueError:
        log.error("%s=%r is not a frame count: allocation tracing stays off", ENV, value)
        return None
    return AllocationTracer(max(1, frames))
