"""cgroup v2 id -> the target (pod) and container attributes its events are charged to.

Rebuilt from the targets every cycle. A container's cgroup gives container-level attributes; the pod's
own cgroup and its sandbox (pause) cgroups belong to the pod with no container attributes. Several
cgroups can map to the same (pod, attributes) series, so values are summed per series, never emitted
twice with the same attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kpod_otel.bpf.histogram import RawHistogram
from kpod_otel.model import AttrValue, Target


@dataclass(frozen=True, slots=True)
class Owner:
    target_key: str
    attributes: tuple[tuple[str, AttrValue], ...]

    def attrs(self, **extra: AttrValue) -> dict[str, AttrValue]:
        return {**dict(self.attributes), **extra}


def owners_by_cgroup(targets: Sequence[Target]) -> dict[int, Owner]:
    owners: dict[int, Owner] = {}
    for target in targets:
        for container in (*target.containers, *target.departed_containers):
            if container.cgroup_id is not None:
                attrs = tuple(sorted(container.attributes().items()))
                owners[container.cgroup_id] = Owner(target.key, attrs)
        pod_level = Owner(target.key, ())
        for cgroup_id in (*target.sandbox_cgroup_ids, *target.departed_cgroup_ids, target.cgroup_id):
            if cgroup_id is not None:
                owners.setdefault(cgroup_id, pod_level)
    return owners


def group_counters(values: Mapping[int, tuple[int, ...]], owners: Mapping[int, Owner]
                   ) -> dict[Owner, tuple[int, ...]]:
    # In the owners' order (the targets' and their containers'), whatever the map's: every metric then lists
    # a pod's series in the same order, which the request's gzip compresses better (docs/performance.md).
    grouped: dict[Owner, tuple[int, ...]] = {}
    for cgroup_id, owner in owners.items():
        row = values.get(cgroup_id)
        if row is None:
            continue  # no entry (yet): not every cgroup has had an event
        prev = grouped.get(owner)
        grouped[owner] = row if prev is None else tuple(a + b for a, b in zip(prev, row, strict=True))
    return grouped


def group_histograms(values: Mapping[int, RawHistogram], owners: Mapping[int, Owner]
                     ) -> dict[Owner, RawHistogram]:
    grouped: dict[Owner, RawHistogram] = {}
    for cgroup_id, owner in owners.items():  # in the owners' order, as group_counters
        hist = values.get(cgroup_id)
        if hist is None:
            continue
        prev = grouped.get(owner)
        grouped[owner] = hist if prev is None else prev + hist
    return grouped
