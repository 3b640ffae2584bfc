"""The cgroup v2 hierarchy the programs attribute by.

cgroup ids in BPF are v2 ids, equal to the inode numbers of the directories in cgroup2fs (kernel >= 5.5).
The v2 root is `<cgroup root>` on a pure-v2 node and `<cgroup root>/unified` on a hybrid one; the cgroup
layer's detector (`kpod_otel.cgroup.fs.detect_layout`) decides which.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from kpod_otel.cgroup.fs import CgroupLayout, CgroupLayoutError, detect_layout

log = logging.getLogger(__name__)

# The cgroup kubelet puts every pod below, in the v2 tree: systemd driver, then cgroupfs driver.
PODS_CGROUPS = ("kubepods.slice", "kubepods")


def find_layout(cgroup_root: str | Path) -> CgroupLayout | None:
    try:
        return detect_layout(str(cgroup_root))
    except CgroupLayoutError:
        return None


def find_cgroup2_root(cgroup_root: str | Path) -> Path | None:
    """The cgroup2 hierarchy under the configured cgroup root, None on a pure-v1 node."""
    layout = find_layout(cgroup_root)
    return Path(layout.v2_dir) if layout is not None and layout.v2_dir else None


def find_pods_cgroup(cgroup2_root: Path) -> Path | None:
    """kubelet's pods cgroup in the v2 tree, None when there is none (not a Kubernetes node, or a hybrid
    node whose runtime creates no v2 directories: then no container has a v2 id either)."""
    for name in PODS_CGROUPS:
        if (cgroup2_root / name).is_dir():
            return cgroup2_root / name
    return None


def pods_only_in_v1(layout: CgroupLayout) -> str | None:
    """On a hybrid node: a v1 hierarchy holding kubelet's pods cgroup when the v2 tree has none (the
    runtime creates no v2 directories, so no container has a v2 id); None otherwise."""
    if layout.v2_dir is None or find_pods_cgroup(Path(layout.v2_dir)) is not None:
        return None
    for mount in sorted(set(layout.v1_controllers.values())):
        if find_pods_cgroup(Path(mount)) is not None:
            return mount
    return None


class CgroupWalkError(OSError):
    """A part of the v2 tree could not be read: the walk does not know every live cgroup."""


def live_cgroup_ids(cgroup2_root: Path) -> set[int]:
    """Ids of every cgroup that exists now (a walk of the v2 tree). A directory removed while we walk is
    skipped (ENOENT/ENODEV: it and its subtree are gone); any other error raises CgroupWalkError, since
    the subtree it hides may hold live cgroups."""
    ids: set[int] = set()
    try:
        os.stat(cgroup2_root)
    except OSError as exc:  # without the root, "nothing found" would mean "every cgroup is gone"
        raise CgroupWalkError(exc.errno, f"walking {cgroup2_root}: {exc.strerror}") from exc
    stack = [str(cgroup2_root)]
    while stack:
        path = stack.pop()
        try:
            ids.add(os.stat(path).st_ino)
            with os.scandir(path) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed meanwhile
        except OSError as exc:
            if exc.errno == errno.ENODEV:  # a cgroup being removed
                continue
            raise CgroupWalkError(exc.errno, f"walking {path}: {exc.strerror}") from exc
    return ids
