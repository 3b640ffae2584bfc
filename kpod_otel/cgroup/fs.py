"""Which cgroup hierarchies are mounted under the configured root, and where a cgroup's files are.

Three layouts exist in the field:
- v2 (unified): one cgroup2 filesystem at the root; every controller's files in one directory.
- v1: one cgroup filesystem per controller (or group of controllers) in `<root>/<controller>`.
- hybrid: v1 controllers plus a cgroup2 filesystem, usually at `<root>/unified`, that holds no
  controllers but gives every cgroup its v2 id (the id eBPF sees).

Cgroup paths in this package are *relative* to a hierarchy's root ("kubepods.slice/…"), so the same
path names the cgroup in every hierarchy.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from kpod_otel.cgroup.parsers import parse_cgroup_procs
from kpod_otel.procfs.parsers import parse_mountinfo

log = logging.getLogger(__name__)

# The hierarchy used to test existence and to list children on v1, in order of preference: kubelet
# creates pod cgroups in every controller it uses; memory, cpu and pids are always among them.
_REFERENCE_CONTROLLERS = ("memory", "cpu", "pids", "blkio", "name=systemd")

# errno values that mean "the cgroup, process or namespace went away while we looked".
VANISHED_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.ENOTDIR})


def is_vanished(exc: OSError) -> bool:
    return exc.errno in VANISHED_ERRNOS


class CgroupVersion(StrEnum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    root: str
    version: CgroupVersion
    # v1 controller name ("memory", "blkio", "name=systemd") -> absolute directory of its hierarchy
    v1_controllers: Mapping[str, str] = field(default_factory=dict)
    v2_dir: str | None = None  # absolute directory of the cgroup2 hierarchy (root, or root/unified)


class CgroupLayoutError(RuntimeError):
    """No cgroup hierarchy was found under the configured root."""


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def layout_from_mountinfo(root: str, mountinfo_text: str) -> CgroupLayout | None:
    """The layout from the cgroup/cgroup2 mounts at or below `root`; None if there are none."""
    root = os.path.normpath(root)
    v1: dict[str, str] = {}
    v2_root: str | None = None
    v2_other: str | None = None
    for mount in parse_mountinfo(mountinfo_text).mounts:
        if not _under(mount.mount_point, root):
            continue
        if mount.fs_type == "cgroup2":
            if mount.mount_point == root:
                v2_root = mount.mount_point
            elif v2_other is None or mount.mount_point == os.path.join(root, "unified"):
                v2_other = mount.mount_point
        elif mount.fs_type == "cgroup":
            for opt in mount.super_options.split(","):
                if opt in ("rw", "ro") or opt.startswith(("release_agent=", "clone_children", "noprefix")):
                    continue
                if opt.startswith("name=") or opt.isidentifier():
                    v1.setdefault(opt, mount.mount_point)
    if v2_root is not None:
        return CgroupLayout(root, CgroupVersion.V2, {}, v2_root)
    if v1:
        return CgroupLayout(root, CgroupVersion.HYBRID if v2_other else CgroupVersion.V1, v1, v2_other)
    if v2_other is not None:  # only a cgroup2 below the root (unusual): treat it as the hierarchy
        return CgroupLayout(root, CgroupVersion.V2, {}, v2_other)
    return None


def layout_from_markers(root: str) -> CgroupLayout | None:
    """The layout from marker files, for a root that is not a mount point in our mount namespace
    (a copied or prepared tree): `cgroup.controllers` exists only in cgroup2 directories."""
    root = os.path.normpath(root)
    if os.path.isfile(os.path.join(root, "cgroup.controllers")):
        return CgroupLayout(root, CgroupVersion.V2, {}, root)
    v1: dict[str, str] = {}
    v2_dir: str | None = None
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return None
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(os.path.join(path, "cgroup.controllers")):
            if v2_dir is None or name == "unified":
                v2_dir = path
        elif os.path.isfile(os.path.join(path, "cgroup.procs")):
            for ctrl in name.split(","):
                key = "name=systemd" if ctrl == "systemd" else ctrl
                v1.setdefault(key, path)
    if v1:
        return CgroupLayout(root, CgroupVersion.HYBRID if v2_dir else CgroupVersion.V1, v1, v2_dir)
    if v2_dir:
        return CgroupLayout(root, CgroupVersion.V2, {}, v2_dir)
    return None


def detect_layout(root: str, mountinfo_path: str = "/proc/self/mountinfo") -> CgroupLayout:
    """Detect v1 / v2 / hybrid from what is mounted under `root` (our own mount namespace, where the
    host's cgroup filesystem is mounted), falling back to marker files for an unmounted tree."""
    if not os.path.isdir(root):
        raise CgroupLayoutError(f"{root} does not exist")
    try:
        with open(mountinfo_path) as f:
            layout = layout_from_mountinfo(root, f.read())
    except OSError as exc:
        log.warning("cannot read %s (%s); detecting cgroups from marker files", mountinfo_path, exc)
        layout = None
    if layout is None:
        layout = layout_from_markers(root)
    if layout is None:
        raise CgroupLayoutError(f"no cgroup v1 or v2 hierarchy under {root}")
    return layout


class CgroupFS:
    """Directories and files of a relative cgroup path in the detected layout."""

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout
        self.version = layout.version
        if layout.version is CgroupVersion.V2:
            assert layout.v2_dir is not None
            self._reference = layout.v2_dir
        else:
            ctrls = layout.v1_controllers
            ref = next((ctrls[c] for c in _REFERENCE_CONTROLLERS if c in ctrls), None)
            self._reference = ref or next(iter(layout.v1_controllers.values()))

    @classmethod
    def detect(cls, root: str, mountinfo_path: str = "/proc/self/mountinfo") -> CgroupFS:
        return cls(detect_layout(root, mountinfo_path))

    @staticmethod
    def _join(base: str, rel: str) -> str:
        rel = rel.strip("/")
        return os.path.join(base, rel) if rel else base

    def v1_dir(self, controller: str, rel: str) -> str | None:
        """`<hierarchy of controller>/<rel>`, or None when that v1 controller is not mounted."""
        base = self.layout.v1_controllers.get(controller)
        return None if base is None else self._join(base, rel)

    def v2_dir(self, rel: str) -> str | None:
        """`<cgroup2 hierarchy>/<rel>` (`<root>/unified/<rel>` on hybrid), None without cgroup2."""
        return None if self.layout.v2_dir is None else self._join(self.layout.v2_dir, rel)

    def controller_dir(self, controller: str, rel: str) -> str | None:
        """Where `controller`'s files of `rel` are: the v2 directory on v2, the v1 hierarchy otherwise."""
        if self.version is CgroupVersion.V2:
            return self.v2_dir(rel)
        return self.v1_dir(controller, rel)

    def reference_dir(self, rel: str) -> str:
        """The directory used to test that a cgroup exists, list its children and read cgroup.procs."""
        return self._join(self._reference, rel)

    def exists(self, rel: str) -> bool:
        return os.path.isdir(self.reference_dir(rel))

    def children(self, rel: str) -> list[str]:
        """Names of the child cgroups of `rel` (raises OSError if `rel` is gone)."""
        with os.scandir(self.reference_dir(rel)) as it:
            return [e.name for e in it if e.is_dir(follow_symlinks=False)]

    def cgroup_id(self, rel: str) -> int | None:
        """The cgroup v2 id of `rel` (the inode of its cgroup2 directory), None if it has none."""
        path = self.v2_dir(rel)
        if path is None:
            return None
        try:
            return os.stat(path).st_ino
        except OSError:
            return None

    def pids(self, rel: str, limit: int = 0) -> tuple[int, ...]:
        """Pids in `rel` (its own processes, not its children's), at most `limit` if > 0.

        Raises OSError if the cgroup is gone."""
        with open(os.path.join(self.reference_dir(rel), "cgroup.procs")) as f:
            pids, _ = parse_cgroup_procs(f.read())
        return pids[:limit] if limit > 0 else pids
