"""The names a catalog metric has in Prometheus after the Collector's `prometheus` exporter converted it.

The one place that knows the exporter's rules; the dashboard, the alert rules and their tests all derive
series and label names from here. The rules are those of the contrib `prometheus` exporter with its default
translation strategy (`UnderscoreEscapingWithSuffixes`: names escaped to `[a-zA-Z0-9_:]`, unit and type
suffixes added), no `namespace`, and `resource_to_telemetry_conversion` enabled, which is how
`otel-collector-config.yaml` configures it (`tests/deploy/test_monitoring.py` checks that config):

- the name is split into tokens at every character outside `[a-zA-Z0-9:]` (so dots, and runs of
  underscores, become one underscore);
- the unit's main part is appended as a token (`By` -> `bytes`, `s` -> `seconds`, ...; `1` and
  annotations such as `{switch}` add nothing), unless the name already has that token; a `/x` part adds
  `per_<x>` likewise;
- monotonic sums (counters) end in `total`, gauges of unit `1` in `ratio` (moved to the end if present);
- histograms become `<name>_bucket` (with `le`), `<name>_sum` and `<name>_count`;
- attribute keys (point attributes, and with `resource_to_telemetry_conversion` every Resource attribute)
  become labels with each character outside `[a-zA-Z0-9_]` replaced by `_`, runs of `_` collapsed, and
  `key_` before a leading digit; each point also gets `otel_scope_name`, `otel_scope_version` and
  `otel_scope_schema_url`, and a Resource with `service.name` gives `job` (and `service.instance.id`
  `instance`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kpod_otel.catalog import InstrumentKind, Level, MetricDef

# OTel (UCUM) units the exporter spells out; anything else is used as written (after escaping).
_UNIT_WORDS: Mapping[str, str] = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}
_PER_UNIT_WORDS: Mapping[str, str] = {
    "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
}
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9:]+")
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")

# Resource attributes the agent puts on every pod's Resource (`k8s.cluster.name` only when configured;
# kpod_otel/cgroup/mapper.py), on container-level points, and on its own Resource (export/resources.py).
POD_RESOURCE_ATTRIBUTES = ("k8s.cluster.name", "k8s.node.name", "k8s.namespace.name", "k8s.pod.name",
                           "k8s.pod.uid")
CONTAINER_ATTRIBUTES = ("k8s.container.name", "container.id")
AGENT_RESOURCE_ATTRIBUTES = ("service.name", "service.version", "service.instance.id", "k8s.node.name",
                             "k8s.cluster.name")
SCOPE_LABELS = ("otel_scope_name", "otel_scope_version", "otel_scope_schema_url")
JOB_LABELS = ("job", "instance")  # from service.name / service.instance.id (the agent's Resource only)
BUCKET_LABEL = "le"


def _unit_suffixes(unit: str) -> tuple[str, str]:
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main_word = "" if not main or "{" in main or "}" in main else _UNIT_WORDS.get(main, main)
    per_word = "" if not per or "{" in per or "}" in per else _PER_UNIT_WORDS.get(per, per)
    return _escape_unit(main_word), _escape_unit(f"per_{per_word}" if per_word else "")


def _escape_unit(word: str) -> str:
    return re.sub("_+", "_", _NOT_NAME_CHAR.sub("_", word)).lstrip("_").rstrip("_")


def prometheus_name(name: str, unit: str, kind: InstrumentKind) -> str:
    """The metric family name the exporter gives an OTLP metric (histograms: without `_bucket` etc.)."""
    tokens = [t for t in _NOT_NAME_CHAR.split(name) if t]
    main, per = _unit_suffixes(unit)
    if main and main not in tokens:
        tokens.append(main)
    if per and per not in tokens:
        tokens.append(per)
    if kind is InstrumentKind.COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind is InstrumentKind.GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    return f"_{out}" if out[:1].isdigit() else out


def label_name(attribute: str) -> str:
    """The label an attribute key (point or, converted, Resource attribute) becomes."""
    out = re.sub("_+", "_", _NOT_LABEL_CHAR.sub("_", attribute))
    return f"key_{out}" if out[:1].isdigit() else out


@dataclass(frozen=True, slots=True)
class PromMetric:
    """A catalog metric as Prometheus sees it."""

    metric: MetricDef
    name: str  # family name

    @property
    def series(self) -> tuple[str, ...]:
        """Every series name the family has in Prometheus."""
        if self.metric.kind is InstrumentKind.HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)

    @property
    def labels(self) -> frozenset[str]:
        """Every label a series of this metric can carry (`le` on `_bucket` only)."""
        attrs: tuple[str, ...] = self.metric.attributes
        if self.metric.level is Level.AGENT:
            attrs += AGENT_RESOURCE_ATTRIBUTES
            extra: tuple[str, ...] = JOB_LABELS
        else:
            attrs += POD_RESOURCE_ATTRIBUTES + CONTAINER_ATTRIBUTES
            extra = ()
        if self.metric.kind is InstrumentKind.HISTOGRAM:
            extra += (BUCKET_LABEL,)
        return frozenset(label_name(a) for a in attrs) | frozenset(SCOPE_LABELS) | frozenset(extra)


def prom_metric(metric: MetricDef) -> PromMetric:
    return PromMetric(metric, prometheus_name(metric.name, metric.unit, metric.kind))


def prom_metrics(catalog: Iterable[MetricDef]) -> dict[str, PromMetric]:
    """Catalog metrics by their OTLP name, as Prometheus sees them."""
    return {m.name: prom_metric(m) for m in catalog}


def series_index(catalog: Iterable[MetricDef]) -> dict[str, PromMetric]:
    """Catalog metrics by every Prometheus series name they produce (`..._bucket`, `..._total`, ...)."""
    return {s: pm for pm in prom_metrics(catalog).values() for s in pm.series}
