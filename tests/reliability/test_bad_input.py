"""Bad input, property-based: every parser not already covered by tests/cgroup/test_parsers.py (cgroup
files, mountinfo, net/dev, uevent there) gets arbitrary and mutated input and must give a typed result or
its typed error, never another exception: Pod / PodList JSON (API server LIST and kubelet /pods bytes),
watch events, cgroup.procs, BPF fdinfo, tracefs formats, cgroup directory names."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpod_otel.bpf.fdinfo import ProgRunStats, parse_prog_fdinfo
from kpod_otel.bpf.tracefs import parse_format_fields
from kpod_otel.cgroup.parsers import parse_cgroup_procs
from kpod_otel.cgroup.paths import ContainerDir, PodDir, parse_container_dir_name, parse_pod_dir_name
from kpod_otel.discovery.credentials import ApiEndpoint
from kpod_otel.discovery.informer import ApiUnavailable, InformerProvider
from kpod_otel.discovery.parse import PodList, PodParseError, load_json, parse_pod, parse_pod_list, parse_pods
from kpod_otel.model import PodInfo
from kpod_otel.selfmetrics import AgentStats
from tests.fakes.k8s import NODE, make_pod

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)

TEMPLATE = make_pod("tmpl", "shop", containers=("app", "side"), init_containers=("init",),
                    ephemeral_containers=("debug",), qos="Burstable")


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


POD_PATHS = _paths(TEMPLATE)[1:]


@st.composite
def mutated_pods(draw: st.DrawFn) -> Any:
    """A real v1 Pod with a few fields replaced by arbitrary JSON or deleted."""
    pod = copy.deepcopy(TEMPLATE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(POD_PATHS))
        parent = pod
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape above this path
    return pod


def deeply_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=st.one_of(mutated_pods(), json_values))
def test_parse_pod_typed_result_or_typed_error(obj: Any) -> None:
    with contextlib.suppress(PodParseError):
        assert isinstance(parse_pod(obj), PodInfo)


def parse_pod_list_bytes(raw: bytes) -> tuple[PodList, list[PodInfo]] | Exception:
    """What the informer's LIST and the kubelet poll do with a response body."""
    try:
        plist = parse_pod_list(load_json(raw))
    except (ValueError, PodParseError) as exc:  # the exceptions both callers handle
        return exc
    pods, errors = parse_pods(plist.items)
    assert all(isinstance(e, PodParseError) for e in errors)
    assert len(pods) + len(errors) == len(plist.items)
    return plist, pods


@st.composite
def pod_list_bodies(draw: st.DrawFn) -> bytes:
    items = draw(st.lists(st.one_of(mutated_pods(), st.just(TEMPLATE), json_values), max_size=4))
    envelope: Any = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": items}
    if draw(st.booleans()):
        envelope = draw(st.sampled_from([envelope, {**envelope, "items": draw(json_values)},
                                         {**envelope, "metadata": draw(json_values)}, draw(json_values)]))
    raw = json.dumps(envelope).encode()
    cut = draw(st.one_of(st.none(), st.integers(0, max(0, len(raw) - 1))))
    return raw if cut is None else raw[:cut]  # a truncated body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(pod_list_bodies(), st.binary(max_size=200)))
def test_pod_list_bytes_from_api_server_or_kubelet(raw: bytes) -> None:
    parse_pod_list_bytes(raw)


def test_deeply_nested_json_is_a_typed_error() -> None:
    """A hostile or broken server answering 100,000 nested arrays must not escape as RecursionError."""
    result = parse_pod_list_bytes(deeply_nested(100_000))
    assert isinstance(result, ValueError | PodParseError), result


@pytest.fixture(scope="module")
def informer() -> InformerProvider:
    # Never started: _event() is the watch-line handler and does no I/O.
    client, _ = ApiEndpoint(host="https://127.0.0.1:9", ca_file="", token_file="/nonexistent").api_client()
    return InformerProvider(client, NODE, AgentStats())


@st.composite
def watch_lines(draw: st.DrawFn) -> bytes:
    etype = draw(st.one_of(st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]), json_values))
    obj = draw(st.one_of(mutated_pods(), json_values,
                         st.just({"kind": "Status", "code": 410, "message": "too old"})))
    event: Any = {"type": etype, "object": obj}
    if draw(st.booleans()):
        event = draw(st.one_of(st.just(event), json_values))
    raw = json.dumps(event).encode()
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(line=st.one_of(watch_lines(), st.binary(max_size=100)))
def test_watch_event_applied_or_typed_error(informer: InformerProvider, line: bytes) -> None:
    with contextlib.suppress(ApiUnavailable):
        assert informer._event(line) in (True, False)


def test_deeply_nested_watch_event_is_a_typed_error(informer: InformerProvider) -> None:
    with pytest.raises(ApiUnavailable):
        informer._event(deeply_nested(100_000))


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.text(alphabet="0123456789\n -x")))
def test_cgroup_procs(text: str) -> None:
    pids, malformed = parse_cgroup_procs(text)
    assert all(isinstance(p, int) and p >= 0 for p in pids) and malformed >= 0


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.text(alphabet="run_time_ns:cnt \t0123456789-\nx")))
def test_prog_fdinfo(text: str) -> None:
    parsed = parse_prog_fdinfo(text)
    assert parsed is None or isinstance(parsed, ProgRunStats)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.text(alphabet="field:unsigned int pid;[] \toffset:0size\n")))
def test_tracefs_format(text: str) -> None:
    fields = parse_format_fields(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(), st.text(alphabet="kubepods-burstable-pod_0123456789abcdef.slicecri-containerd-"
                                                  "scopecrio-conmon-docker")),
       qos=st.sampled_from(["", "burstable", "besteffort", "guaranteed"]))
def test_cgroup_dir_names(name: str, qos: str) -> None:
    pod = parse_pod_dir_name(name, qos)
    assert pod is None or isinstance(pod, PodDir)
    container = parse_container_dir_name(name)
    assert container is None or isinstance(container, ContainerDir)
