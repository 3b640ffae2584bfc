"""The cgroup v2 hierarchy the programs attribute by (local check; the cgroup layer owns the full detector).

cgroup ids in BPF are v2 ids, equal to the inode numbers of the directories in cgroup2fs (kernel >= 5.5).
The v2 root is `<cgroup root>` on a pure-v2 node and `<cgroup root>/unified` on a hybrid one; either way
it is the directory holding `cgroup.controllers`, which only cgroup2fs has.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def find_cgroup2_root(cgroup_root: str | Path) -> Path | None:
    root = Path(cgroup_root)
    for candidate in (root, root / "unified"):
        if (candidate / "cgroup.controllers").is_file():
            return candidate
    return None


def cgroup_id(path: str | Path) -> int:
    """The cgroup v2 id of a cgroup2 directory (its inode number)."""
    return os.stat(path).st_ino


def live_cgroup_ids(cgroup2_root: Path) -> set[int]:
    """Ids of every cgroup that exists now (a walk of the v2 tree; directories vanish while we walk)."""
    ids: set[int] = set()
    stack = [str(cgroup2_root)]
    while stack:
        path = stack.pop()
        try:
            ids.add(os.stat(path).st_ino)
            with os.scandir(path) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue  # removed meanwhile
    return ids
