"""OTEL_METRICS_EXPORTER: where each cycle goes (configuration/sdk-environment-variables.md, "Exporter
Selection").

- `otlp` (default): the OTLP exporter (OTEL_EXPORTER_OTLP_*);
- `console`: each cycle printed to stdout as one line of OTLP/JSON (the encoding the Collector's file
  exporter writes and `otlp/stdout` names), nothing sent;
- `none`: collect every cycle (health endpoints, logs) but send nothing.

The specification allows a comma-separated list; `otlp,console` does both. Values are case-insensitive;
unset or empty means `otlp`. `none` in a list with others is contradictory and, like an unknown value
(`prometheus`, the deprecated `logging`), stops the agent with exit code 2 naming the supported values
(the specification would warn and ignore; here every setting is checked, see export/temporality.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

ENV_VAR = "OTEL_METRICS_EXPORTER"


class MetricsExporter(StrEnum):
    OTLP = "otlp"
    CONSOLE = "console"
    NONE = "none"


def exporters_from_env(env: Mapping[str, str]) -> frozenset[MetricsExporter]:
    """The selected exporters (empty for `none`); ValueError with a one-line message otherwise."""
    raw = env.get(ENV_VAR, "").strip()
    if not raw:
        return frozenset({MetricsExporter.OTLP})
    allowed = "otlp | console | none (or a comma-separated list of otlp and console)"
    chosen: set[MetricsExporter] = set()
    for item in raw.split(","):
        name = item.strip().lower()
        try:
            chosen.add(MetricsExporter(name))
        except ValueError:
            raise ValueError(f"{ENV_VAR}: {name!r} is not supported; allowed: {allowed}") from None
    if MetricsExporter.NONE in chosen:
        if len(chosen) > 1:
            raise ValueError(f"{ENV_VAR}: {raw!r} combines none with other exporters; allowed: {allowed}")
        return frozenset()
    return frozenset(chosen)
