"""OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: which metrics are exported as DELTA.

The specification (metrics/sdk_exporters/otlp.md) decides per instrument kind:

| preference   | Counter | Asynchronous Counter | Histogram | UpDownCounter (both) |
|--------------|---------|----------------------|-----------|----------------------|
| `cumulative` | cumul.  | cumul.               | cumul.    | cumul.               |
| `delta`      | delta   | delta                | delta     | cumul.               |
| `lowmemory`  | delta   | cumul.               | delta     | cumul.               |

Gauges have no temporality. How kpod-otel's metrics map to those kinds (the catalog says it per metric,
`MetricDef.synchronous`):

- a total the kernel keeps and the agent reads each cycle (cgroup files, interface statistics, eBPF
  per-cgroup counters, BPF run statistics) is what the API calls an Asynchronous Counter: a callback
  observing a cumulative value;
- a counter the agent increments itself as things happen (`kpod.agent.cycles`, `.errors`, `.exports`,
  `.discovery.mode.switches`) is a synchronous Counter;
- the eBPF histograms are Histograms: every sample is recorded as it happens (in the kernel); the API
  has no asynchronous histogram.

Whatever the preference, the agent keeps the same per-series state (export/series.py): the last value
read is needed anyway to detect resets, and it is all a delta needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from kpod_otel.catalog import CATALOG, InstrumentKind, InstrumentSpec

ENV_VAR = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"


class TemporalityPreference(StrEnum):
    CUMULATIVE = "cumulative"
    DELTA = "delta"
    LOW_MEMORY = "lowmemory"


def preference_from_env(env: Mapping[str, str]) -> TemporalityPreference:
    """The preference (case-insensitive; unset or empty: cumulative). ValueError names the allowed values.

    The specification asks to warn and ignore an unknown value; kpod-otel stops instead (exit 2), as for
    every other setting: a typo would otherwise silently send cumulative data to a delta-only backend."""
    raw = env.get(ENV_VAR, "").strip()
    if not raw:
        return TemporalityPreference.CUMULATIVE
    try:
        return TemporalityPreference(raw.lower())
    except ValueError:
        allowed = " | ".join(p.value for p in TemporalityPreference)
        raise ValueError(f"{ENV_VAR}: {raw!r} is not supported; allowed: {allowed}") from None


def is_delta(preference: TemporalityPreference, kind: InstrumentKind, synchronous: bool) -> bool:
    """Whether a metric of this instrument kind is exported as DELTA (the table above)."""
    if preference is TemporalityPreference.CUMULATIVE or kind in (InstrumentKind.GAUGE,
                                                                  InstrumentKind.UP_DOWN_COUNTER):
        return False
    if preference is TemporalityPreference.DELTA or kind is InstrumentKind.HISTOGRAM:
        return True
    return synchronous  # lowmemory: delta for synchronous counters only


def delta_metrics(preference: TemporalityPreference, specs: Iterable[InstrumentSpec]) -> frozenset[str]:
    """The names of the metrics exported as DELTA. A metric missing from the catalog counts as read from
    its source (asynchronous), as everything a collector reports is."""
    out = set()
    for spec in specs:
        entry = CATALOG.get(spec.name)
        if is_delta(preference, spec.kind, entry is not None and entry.synchronous):
            out.add(spec.name)
    return frozenset(out)
