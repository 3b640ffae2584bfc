"""The agent's own metrics: every component counts its errors and states here.

`AgentStats` is created once per agent and passed to whatever needs to count something (no global
state). `SelfMetricsCollector` turns it into points on the agent Resource each cycle. Every self-metric
is declared in the catalog (collector "agent"), so the set of instruments is fixed and documented in one place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from kpod_otel.catalog import specs_for
from kpod_otel.collector import AGENT_TARGET_KEY, Collector, CollectorSnapshot, InstrumentSpec
from kpod_otel.model import AttrValue, Target

AGENT_INSTRUMENTS: tuple[InstrumentSpec, ...] = specs_for("agent")

_AGENT_NAMES = frozenset(spec.name for spec in AGENT_INSTRUMENTS)

_Key = tuple[str, tuple[tuple[str, AttrValue], ...]]


class AgentStats:
    """Thread-safe store of self-metric values (discovery runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[_Key, float] = {}
        self.started_ns = time.time_ns()  # every counter here counts from this moment

    @staticmethod
    def _key(name: str, attrs: dict[str, AttrValue] | None) -> _Key:
        if name not in _AGENT_NAMES:
            raise KeyError(f"undeclared self-metric {name!r}: declare it in kpod_otel/catalog.py")
        return name, tuple(sorted((attrs or {}).items()))

    def add(self, name: str, amount: float = 1, **attrs: AttrValue) -> None:
        """Increase a counter."""
        key = self._key(name, attrs)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def error(self, component: str, kind: str, amount: int = 1) -> None:
        """Count an error of `component` (a collector's name such as "disk", or "bpf", "discovery", …) of
        `kind` (e.g. "parse")."""
        self.add("kpod.agent.errors", amount, **{"kpod.component": component, "error.type": kind})

    def set(self, name: str, value: float, **attrs: AttrValue) -> None:
        """Set a gauge, or a counter whose cumulative value is read from elsewhere."""
        key = self._key(name, attrs)
        with self._lock:
            self._values[key] = value

    def get(self, name: str, **attrs: AttrValue) -> float:
        with self._lock:
            return self._values.get(self._key(name, attrs), 0)

    def total(self, name: str) -> float:
        """Sum over all attribute sets of one metric."""
        with self._lock:
            return sum(v for (n, _), v in self._values.items() if n == name)

    def items(self) -> list[tuple[str, dict[str, AttrValue], float]]:
        with self._lock:
            return [(n, dict(a), v) for (n, a), v in self._values.items()]


class SelfMetricsCollector(Collector):
    name = "agent"

    def __init__(self, stats: AgentStats) -> None:
        self._stats = stats

    def instruments(self) -> Sequence[InstrumentSpec]:
        return AGENT_INSTRUMENTS

    def collect(self, targets: Sequence[Target]) -> CollectorSnapshot:
        snap = CollectorSnapshot()
        for name, attrs, value in self._stats.items():
            snap.add(AGENT_TARGET_KEY, name, value, attrs)
        return snap
