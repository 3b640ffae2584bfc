"""What the running kernel and cgroup layout allow the programs to measure, decided from facts the node
shows (`uname -r`, the mounted v1 controllers), so that `run` and `check` say the same thing."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# cgroup ids are v2 directory inode numbers from 5.5 on (bpf_get_current_cgroup_id and the cgroup_rmdir
# id match the directory the agent stats).
KERNEL_CGROUP_IDS = (5, 5)
# The TCP program claims deltas with __sync_val_compare_and_swap: BPF_CMPXCHG, kernel 5.12.
KERNEL_BPF_CMPXCHG = (5, 12)
# Before 5.15 a socket's v1 net_cls classid / net_prio prioidx and its v2 cgroup shared one field; once
# either controller is used anywhere, the kernel stops recording the v2 cgroup of new sockets and
# bpf_skb_cgroup_id() returns the root for them ("cgroup: disabling cgroup2 socket matching due to
# net_prio or net_cls activation"). Fixed in 5.15 (commit 8520e224f547).
KERNEL_SKB_CGROUP_FIX = (5, 15)

NET_CLS_FALLBACK = "net_cls_net_prio"
NO_V2_POD_CGROUPS = "no_v2_pod_cgroups"


@dataclass(frozen=True, slots=True)
class Limitation:
    """A node-wide reason why some eBPF metrics can be wrong or missing (shown by `check` and `run`)."""

    key: str  # the `kpod.bpf.limitation` attribute of the self-metric
    detail: str


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a `uname -r` string such as "6.18.44-fc-v769"; (0, 0) when unreadable."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def too_old(release: str, needed: tuple[int, int], what: str) -> str:
    """"" when the kernel is at least `needed`, else the reason in a sentence."""
    have = kernel_version(release)
    if have >= needed:
        return ""
    return f"kernel {release} is older than {needed[0]}.{needed[1]}, which {what} needs"


def node_limitations(release: str, hybrid: bool, v1_controllers: Iterable[str],
                     pods_only_in_v1: str | None = None) -> tuple[Limitation, ...]:
    """Node-wide conditions under which eBPF attribution goes wrong silently."""
    found: list[Limitation] = []
    if pods_only_in_v1:
        found.append(Limitation(
            NO_V2_POD_CGROUPS,
            f"kubelet's pods cgroup exists in {pods_only_in_v1} but not in the cgroup v2 tree: containers have "
            "no v2 directory, so no eBPF metric can be charged to them"))
    used = sorted({c for c in v1_controllers if c in ("net_cls", "net_prio")})
    if hybrid and used and kernel_version(release) < KERNEL_SKB_CGROUP_FIX:
        found.append(Limitation(
            NET_CLS_FALLBACK,
            f"hybrid cgroups with the v1 {'/'.join(used)} controller mounted on kernel {release} (< 5.15): once "
            "net_cls.classid or net_prio.ifpriomap is set anywhere, sockets lose their v2 cgroup and TCP "
            "metrics are charged to the root, i.e. to no pod"))
    return tuple(found)
