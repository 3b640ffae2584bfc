"""OTel Resource attributes: one set per pod (its identity), one for the agent itself.

OTEL_RESOURCE_ATTRIBUTES (and OTEL_SERVICE_NAME) describe the agent. Some of their attributes also say
where every pod of this node lives (`k8s.cluster.name`, `deployment.environment.name`, `cloud.region`, a
team or tenant key of the user's own): those are copied onto the pod Resources. Those that identify the
agent process or its own pod are not, since on a pod Resource they would name the wrong thing: the
namespaces in `AGENT_ONLY_PREFIXES` (`service.*`, `host.*`, `os.*`, `process.*`, `container.*`,
`telemetry.*`, and the agent's own Kubernetes identity: `k8s.pod.*`, `k8s.container.*`,
`k8s.namespace.*`, `k8s.daemonset.*`, `k8s.node.*`...). docs/configuration.md documents the split.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from kpod_otel import __version__
from kpod_otel.model import AttrValue

# Attributes of these namespaces stay on the agent's Resource only.
AGENT_ONLY_PREFIXES: tuple[str, ...] = (
    "service.", "host.", "os.", "process.", "container.", "telemetry.", "webengine.",
    "k8s.pod.", "k8s.container.", "k8s.namespace.", "k8s.node.", "k8s.daemonset.", "k8s.replicaset.",
    "k8s.deployment.", "k8s.statefulset.", "k8s.job.", "k8s.cronjob.",
)


def _detected() -> dict[str, AttrValue]:
    attrs = OTELResourceDetector().detect().attributes
    return {k: v for k, v in attrs.items() if isinstance(v, (str, bool, int, float))}


def pod_attributes_from(attrs: Mapping[str, AttrValue]) -> dict[str, AttrValue]:
    """The part of the agent's configured Resource attributes that belongs on every pod Resource."""
    return {k: v for k, v in attrs.items() if not k.startswith(AGENT_ONLY_PREFIXES)}


def env_resource_attributes() -> dict[str, AttrValue]:
    """Attributes from OTEL_RESOURCE_ATTRIBUTES applied to every pod Resource (see the module docstring)."""
    return pod_attributes_from(_detected())


def agent_resource_attributes(node_name: str, cluster_name: str = "") -> dict[str, AttrValue]:
    """The agent's Resource; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME override these defaults.

    `service.instance.id` is a random UUID drawn once per process (stable while it runs, distinct for
    every agent of every node and for each restart), so that two nodes' agents are two series and two
    `target_info` in Prometheus, whatever else their Resources share.
    """
    attrs: dict[str, AttrValue] = {"service.name": "kpod-otel", "service.version": __version__,
                                   "service.instance.id": _INSTANCE_ID}
    if node_name:
        attrs["k8s.node.name"] = node_name
    if cluster_name:
        attrs["k8s.cluster.name"] = cluster_name
    merged = Resource(attrs).merge(Resource(_detected())).attributes
    return {k: v for k, v in merged.items() if isinstance(v, (str, bool, int, float))}


# One per process (not global mutable state: never reassigned).
_INSTANCE_ID = str(uuid.uuid4())
