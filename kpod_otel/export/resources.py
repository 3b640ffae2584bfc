"""OTel Resource attributes: one set per pod (its identity), one for the agent itself."""

from __future__ import annotations

from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from kpod_otel import __version__
from kpod_otel.model import AttrValue


def env_resource_attributes() -> dict[str, AttrValue]:
    """Attributes from OTEL_RESOURCE_ATTRIBUTES (e.g. k8s.cluster.name, deployment.environment), applied to
    every pod Resource. `service.*` keys describe the agent, not the pods, so they stay on the agent."""
    attrs = OTELResourceDetector().detect().attributes
    return {k: v for k, v in attrs.items() if not k.startswith("service.") and isinstance(v, (str, bool, int, float))}


def agent_resource_attributes(node_name: str, cluster_name: str = "") -> dict[str, AttrValue]:
    """The agent's Resource; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME override these defaults."""
    attrs: dict[str, AttrValue] = {"service.name": "kpod-otel", "service.version": __version__}
    if node_name:
        attrs["k8s.node.name"] = node_name
    if cluster_name:
        attrs["k8s.cluster.name"] = cluster_name
    merged = Resource(attrs).merge(OTELResourceDetector().detect()).attributes
    return {k: v for k, v in merged.items() if isinstance(v, (str, bool, int, float))}
