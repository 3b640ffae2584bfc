"""PromQL building blocks over the catalog: series names, label names and the dashboard's selectors.

`Names` hands out the Prometheus name of a catalog metric and raises `MissingMetric` for one the catalog
does not have, so a panel or rule that names it is left out instead of querying a series that never exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from kpod_otel.catalog import InstrumentKind, MetricDef
from scripts.monitoring.promnames import PromMetric, label_name, prom_metrics


class MissingMetric(LookupError):
    """A panel or rule names a metric the catalog does not declare (yet)."""


# Labels the exporter makes of the Resource and container attributes.
CLUSTER = label_name("k8s.cluster.name")
NODE = label_name("k8s.node.name")
NAMESPACE = label_name("k8s.namespace.name")
POD = label_name("k8s.pod.name")
CONTAINER = label_name("k8s.container.name")

BY_POD = f"{CLUSTER}, {NODE}, {NAMESPACE}, {POD}"
BY_CONTAINER = f"{BY_POD}, {CONTAINER}"

# Dashboard selectors: the template variables ("All" is ".*", which also matches a missing label, e.g.
# k8s_cluster_name when no cluster name is configured, or pod-level points without a container).
SEL_AGENT = f'{CLUSTER}=~"$cluster", {NODE}=~"$node"'
SEL_POD = f'{SEL_AGENT}, {NAMESPACE}=~"$namespace", {POD}=~"$pod"'
SEL_CONTAINER = f'{SEL_POD}, {CONTAINER}=~"$container"'


class Names:
    """Prometheus names of the metrics of one catalog; remembers which metrics were asked for."""

    def __init__(self, catalog: Iterable[MetricDef]) -> None:
        self._metrics = prom_metrics(catalog)
        self.used: set[str] = set()

    def metric(self, name: str) -> PromMetric:
        pm = self._metrics.get(name)
        if pm is None:
            raise MissingMetric(name)
        self.used.add(name)
        return pm

    def __call__(self, name: str) -> str:
        """The series name of a counter or gauge."""
        pm = self.metric(name)
        if pm.metric.kind is InstrumentKind.HISTOGRAM:
            raise ValueError(f"{name} is a histogram: use bucket()/sum()/count()")
        return pm.name

    def bucket(self, name: str) -> str:
        return self._histogram(name) + "_bucket"

    def count(self, name: str) -> str:
        return self._histogram(name) + "_count"

    def attr(self, metric: str, attribute: str) -> str:
        """The label of one of a metric's point attributes (which the catalog must declare)."""
        pm = self.metric(metric)
        if attribute not in pm.metric.attributes:
            raise ValueError(f"{metric} has no attribute {attribute} in the catalog")
        return label_name(attribute)

    def _histogram(self, name: str) -> str:
        pm = self.metric(name)
        if pm.metric.kind is not InstrumentKind.HISTOGRAM:
            raise ValueError(f"{name} is not a histogram")
        return pm.name

    def catalog_names(self) -> frozenset[str]:
        return frozenset(self._metrics)

    def unused(self) -> list[PromMetric]:
        return [pm for name, pm in self._metrics.items() if name not in self.used]


def rate(series: str, selector: str, window: str) -> str:
    return f"rate({series}{{{selector}}}[{window}])" if selector else f"rate({series}[{window}])"


def quantile(q: float, bucket: str, selector: str, by: str, window: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) ({rate(bucket, selector, window)}))"
