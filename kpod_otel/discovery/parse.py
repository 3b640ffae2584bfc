"""Pure parsers: Kubernetes v1 Pod / PodList JSON (as the API server and the kubelet's /pods return it)
to `PodInfo`.

Malformed objects raise `PodParseError`; callers catch it per pod, so one bad object never hides the
others. Nothing here does I/O or logging.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kpod_otel.model import ContainerInfo, ContainerKind, PodInfo

# containerID schemes the kubelet reports (runtime name in the CRI status) -> our runtime name.
_RUNTIMES = {"containerd": "containerd", "cri-o": "cri-o", "docker": "docker"}

# Where each kind of container is declared (spec) and reported (status).
_KIND_FIELDS: tuple[tuple[ContainerKind, str, str], ...] = (
    (ContainerKind.INIT, "initContainers", "initContainerStatuses"),
    (ContainerKind.APP, "containers", "containerStatuses"),
    (ContainerKind.EPHEMERAL, "ephemeralContainers", "ephemeralContainerStatuses"),
)

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


class PodParseError(ValueError):
    """A pod (or pod list) object that does not have the shape of a v1 Pod."""

    def __init__(self, message: str, pod: str = "") -> None:
        super().__init__(f"pod {pod}: {message}" if pod else message)
        self.pod = pod  # "namespace/name" when known, for the log line


@dataclass(frozen=True, slots=True)
class PodList:
    """The envelope of a LIST response: raw items (parsed one by one) and the list's resourceVersion."""

    items: tuple[Mapping[str, Any], ...]
    resource_version: str


def load_json(raw: bytes | str) -> Any:
    """`json.loads` for a server's response: nesting too deep for the decoder is a ValueError like any other
    malformed JSON (json raises RecursionError there, which callers would not expect)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def split_container_id(raw: str) -> tuple[str, str]:
    """`containerd://<id>` -> ("<id>", "containerd"); an unknown scheme keeps the id with runtime ""."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return raw, ""
    return rest, _RUNTIMES.get(scheme, "")


def _mapping(obj: Any, what: str, pod: str, *, required: bool = False) -> Mapping[str, Any]:
    if obj is None and not required:
        return {}
    if not isinstance(obj, Mapping):
        raise PodParseError(f"{what} is {type(obj).__name__}, expected an object", pod)
    return obj


def _list(obj: Any, what: str, pod: str) -> Sequence[Any]:
    if obj is None:
        return ()
    if not isinstance(obj, list):
        raise PodParseError(f"{what} is {type(obj).__name__}, expected a list", pod)
    return obj


def _str(obj: Any, what: str, pod: str, *, default: str | None = None) -> str:
    if obj is None and default is not None:
        return default
    if not isinstance(obj, str):
        raise PodParseError(f"{what} is {type(obj).__name__}, expected a string", pod)
    return obj


def _containers(kind: ContainerKind, specs: Sequence[Any], statuses: Sequence[Any],
                pod: str) -> list[ContainerInfo]:
    by_name: dict[str, Mapping[str, Any]] = {}
    for i, st in enumerate(statuses):
        status = _mapping(st, f"{kind} container status [{i}]", pod, required=True)
        by_name[_str(status.get("name"), f"{kind} container status [{i}] name", pod)] = status
    names: list[str] = []
    for i, sp in enumerate(specs):
        spec = _mapping(sp, f"{kind} container [{i}]", pod, required=True)
        names.append(_str(spec.get("name"), f"{kind} container [{i}] name", pod))
    # A status without a spec entry should not exist, but the status is the truth about what runs.
    names.extend(n for n in by_name if n not in names)
    out: list[ContainerInfo] = []
    for name in names:
        status = by_name.get(name, {})
        cid, runtime = split_container_id(
            _str(status.get("containerID"), f"container {name} containerID", pod, default=""))
        restarts = status.get("restartCount", 0)
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
            raise PodParseError(f"container {name} restartCount {restarts!r} is not a count", pod)
        out.append(ContainerInfo(name=name, container_id=cid, runtime=runtime,
                                 restart_count=restarts, kind=kind))
    return out


def parse_pod(obj: Any) -> PodInfo:
    """One v1 Pod object -> PodInfo. Raises PodParseError."""
    top = _mapping(obj, "pod", "", required=True)
    meta = _mapping(top.get("metadata"), "metadata", "", required=True)
    name = _str(meta.get("name"), "metadata.name", "")
    namespace = _str(meta.get("namespace"), "metadata.namespace", name)
    pod = f"{namespace}/{name}"
    uid = _str(meta.get("uid"), "metadata.uid", pod)
    if not uid:
        raise PodParseError("metadata.uid is empty", pod)
    annotations = _mapping(meta.get("annotations"), "metadata.annotations", pod)
    config_hash = annotations.get("kubernetes.io/config.hash")
    kubelet_uid = config_hash if isinstance(config_hash, str) and config_hash != uid else ""
    labels = _mapping(meta.get("labels"), "metadata.labels", pod)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise PodParseError("metadata.labels must map strings to strings", pod)
    spec = _mapping(top.get("spec"), "spec", pod)
    status = _mapping(top.get("status"), "status", pod)
    host_network = spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        raise PodParseError(f"spec.hostNetwork {host_network!r} is not a boolean", pod)
    containers: list[ContainerInfo] = []
    for kind, spec_field, status_field in _KIND_FIELDS:
        containers.extend(_containers(kind, _list(spec.get(spec_field), f"spec.{spec_field}", pod),
                                      _list(status.get(status_field), f"status.{status_field}", pod), pod))
    return PodInfo(
        uid=uid,
        created_ns=0 if kubelet_uid else _timestamp_ns(meta.get("creationTimestamp")),
        name=name,
        namespace=namespace,
        node_name=_str(spec.get("nodeName"), "spec.nodeName", pod, default=""),
        qos_class=_str(status.get("qosClass"), "status.qosClass", pod, default=""),
        containers=tuple(containers),
        host_network=host_network,
        phase=_str(status.get("phase"), "status.phase", pod, default="Pending"),
        labels=dict(labels),
        kubelet_uid=kubelet_uid,
    )


def _timestamp_ns(raw: Any) -> int:
    """An RFC 3339 timestamp as the API server writes it ("2024-05-01T10:00:00Z") -> ns; 0 if absent or
    malformed (a missing creation time only costs the start times their precision)."""
    if not isinstance(raw, str):
        return 0
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        return 0
    return int(parsed.timestamp()) * 1_000_000_000


def parse_pod_list(obj: Any) -> PodList:
    """The envelope of a v1 PodList (API server LIST or kubelet /pods). Items are parsed separately."""
    top = _mapping(obj, "pod list", "", required=True)
    kind = top.get("kind")
    if kind is not None and kind != "PodList":
        raise PodParseError(f"expected kind PodList, got {kind!r}")
    meta = _mapping(top.get("metadata"), "pod list metadata", "")
    items = _list(top.get("items"), "items", "")
    rv = _str(meta.get("resourceVersion"), "pod list metadata.resourceVersion", "", default="")
    return PodList(items=tuple(items), resource_version=rv)


def parse_pods(items: Iterable[Any]) -> tuple[list[PodInfo], list[PodParseError]]:
    """Parse every item; malformed ones are returned as errors instead of hiding the rest."""
    pods: list[PodInfo] = []
    errors: list[PodParseError] = []
    for item in items:
        try:
            pods.append(parse_pod(item))
        except PodParseError as exc:
            errors.append(exc)
    return pods, errors


def object_resource_version(obj: Any) -> str:
    """metadata.resourceVersion of a watch event object ("" if absent or malformed)."""
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            rv = meta.get("resourceVersion")
            if isinstance(rv, str):
                return rv
    return ""


def object_uid(obj: Any) -> str:
    """metadata.uid of a watch event object ("" if absent or malformed)."""
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            uid = meta.get("uid")
            if isinstance(uid, str):
                return uid
    return ""
