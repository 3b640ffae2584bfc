"""What BPF state a process owns, and what is left of it: an oracle independent of the agent's code.

`bpftool` here is built without process information (no `pids` in `bpftool prog show`), and other tests
load programs of the same names at the same time, so the agent's programs are identified by the file
descriptors it holds: `/proc/<pid>/fdinfo/<fd>` of a BPF program shows its `prog_id`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

V2_ROOT = "/sys/fs/cgroup/unified"


def prog_ids_held_by(pid: int) -> set[int]:
    ids: set[int] = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                text = f.read()
        except OSError:
            continue  # closed meanwhile
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "prog_id":
                ids.add(int(value))
    return ids


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], check=True, capture_output=True, text=True).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


def cgroup_attachments(root: str = V2_ROOT) -> dict[int, tuple[str, str]]:
    """prog id -> (cgroup, attach type) of every program attached in the v2 hierarchy."""
    # bpftool walks the tree and fails when a cgroup disappears under it (other tests remove theirs at
    # any time): try again
    for _ in range(10):
        proc = subprocess.run(["bpftool", "cgroup", "tree", "-j", root], capture_output=True, text=True)
        if proc.returncode == 0:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"bpftool cgroup tree failed: {proc.stderr.strip()}")
    out = proc.stdout
    attached: dict[int, tuple[str, str]] = {}
    for entry in json.loads(out or "[]"):
        for prog in entry.get("programs", []):
            attached[int(prog["id"])] = (entry["cgroup"], prog["attach_type"])
    return attached


def recursion_misses(ids: set[int], name_prefix: str = "") -> int:
    """Events the kernel did not run these programs for because another tracing program was running
    on the same CPU (`recursion_misses` of `bpftool prog show`)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], check=True, capture_output=True, text=True).stdout
    return sum(int(p.get("recursion_misses", 0)) for p in json.loads(out or "[]")
               if int(p["id"]) in ids and str(p.get("name", "")).startswith(name_prefix))
