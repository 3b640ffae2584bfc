"""What a test session must leave as it found it, and what it left: an oracle independent of the agent.

A snapshot holds this machine's cgroups (every cgroup hierarchy under /sys/fs/cgroup, v1 and v2), network
namespaces, links of the root network namespace, mounts, BPF programs, their cgroup attachments and the
suite's temporary directories. An object is a leak when it did not exist at the start of the session AND
it is the suite's: its name follows the suite's convention (every kernel object a test makes is named
`kpt-…`, test pods carry kubelet's `kubepods…` cgroup names), or a process of this session holds it.
Objects of other activity on the machine (benchmarks `kpt-bench-…`, `make run`'s `kpod-demo-…`, systemd's
units, other people's work) are not counted, so the check holds while other work runs on the machine; an
unprivileged session (the fast lane) cannot create kernel objects, so it checks only its processes and
files. Two root sessions at once are not told apart: kernel test runs take /tmp/kpod-tests.lock.
Processes: any process still alive that this session started (its descendants, and anything carrying the
session's environment marker even if it was re-parented).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.bpfstate import cgroup_attachments, prog_ids_held_by

CGROUP_ROOT = "/sys/fs/cgroup"
SUITE_PREFIXES = ("kpt",)  # tests name their cgroups, netns, links, tmpfs sources and temp dirs kpt-<area>-…
KUBE_CGROUP_PREFIXES = ("kubepods", "kubelet")  # test pods wear kubelet's cgroup names
FOREIGN_PREFIXES = ("kpt-bench-", "kpod-demo-")  # benchmarks (bench/) and `make run` demo workloads
TMP_DIRS = ("/tmp", "/var/tmp")
# ip-netns(8) bind-mounts /run/netns onto itself the first time any namespace is added, and leaves it so
NETNS_DIR = "/run/netns"
SESSION_ENV = "KPT_TEST_SESSION"  # not KPOD_…: tests strip those from the agent's environment


def suite_named(name: str) -> bool:
    return name.startswith(SUITE_PREFIXES) and not name.startswith(FOREIGN_PREFIXES)


@dataclass(frozen=True)
class Mount:
    point: str
    fs_type: str
    source: str


@dataclass(frozen=True)
class HostState:
    cgroups: frozenset[str]  # absolute directory paths in every cgroup hierarchy
    netns: frozenset[str]
    links: frozenset[str]
    mounts: frozenset[Mount]
    progs: frozenset[int] | None  # None: not inspectable here (bpftool needs root)
    tmp: frozenset[str]


def mounts() -> list[Mount]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 2:
            point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            found.append(Mount(point.replace("\\134", "\\"), tail[0], tail[1]))
    return found


def cgroup_dirs() -> set[str]:
    dirs: set[str] = set()
    for m in mounts():
        if m.fs_type in ("cgroup", "cgroup2") and (m.point == CGROUP_ROOT or m.point.startswith(CGROUP_ROOT + "/")):
            for top, subdirs, _ in os.walk(m.point):  # cgroups vanish while walked: os.walk skips them
                dirs.update(os.path.join(top, d) for d in subdirs)
    return dirs


def listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def bpf_progs() -> dict[int, dict[str, object]] | None:
    if os.geteuid() != 0:
        return None
    try:
        out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {int(p["id"]): p for p in json.loads(out.stdout or "[]")}


def take() -> HostState:
    progs = bpf_progs()
    return HostState(
        cgroups=frozenset(cgroup_dirs()),
        netns=frozenset(listdir(NETNS_DIR)),
        links=frozenset(listdir("/sys/class/net")),
        mounts=frozenset(mounts()),
        progs=None if progs is None else frozenset(progs),
        tmp=frozenset(os.path.join(d, n) for d in TMP_DIRS for n in listdir(d)),
    )


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, zombies included (a child nobody waited for
    is a leak too)."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            procs[int(entry)] = (ppid, cmd.strip() or stat[stat.find("(") : stat.rfind(")") + 1])
    return procs


def session_processes(session_pid: int) -> dict[int, str]:
    """Live processes this session started: its descendants and any carrying its environment marker."""
    procs = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    ours: set[int] = set()
    todo = list(children.get(session_pid, []))
    while todo:
        pid = todo.pop()
        if pid not in ours:
            ours.add(pid)
            todo.extend(children.get(pid, []))
    marker = f"{SESSION_ENV}={session_pid}".encode()
    for pid in procs:
        if pid == session_pid or pid in ours:
            continue
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                ours.add(pid)
    return {pid: procs[pid][1] for pid in sorted(ours) if pid in procs}


def suite_cgroup(path: str) -> bool:
    parts = path.split("/")
    if any(p.startswith(FOREIGN_PREFIXES) for p in parts):
        return False
    return any(p.startswith(SUITE_PREFIXES + KUBE_CGROUP_PREFIXES) for p in parts)


def suite_mount(m: Mount, repo: str) -> bool:
    if m.point == NETNS_DIR or m.point.startswith(NETNS_DIR + "/"):
        return False  # network namespaces are reported as such
    if any(p in (m.point + "/" + m.source) for p in FOREIGN_PREFIXES):
        return False
    return (any(suite_named(part) for part in (m.point + "/" + m.source).split("/"))
            or m.point == repo or m.point.startswith(repo + "/"))


def leaked_progs(before: Iterable[int], session_pid: int, ours: Iterable[int]) -> list[str]:
    """New BPF programs held by this session's processes, or by no process at all (pinned, or attached
    to a cgroup after their loader exited); programs held by other processes are other people's."""
    now = bpf_progs()
    if now is None:
        return []
    new = set(now) - set(before)
    if not new:
        return []
    holders: dict[int, set[int]] = {}
    for entry in listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                for prog in prog_ids_held_by(int(entry)) & new:
                    holders.setdefault(prog, set()).add(int(entry))
    session = {session_pid, *ours}
    attached: dict[int, tuple[str, str]] = {}
    for m in mounts():
        if m.fs_type == "cgroup2":
            with contextlib.suppress(AssertionError, ValueError):
                attached.update(cgroup_attachments(m.point))
    found = []
    for prog in sorted(new):
        held = holders.get(prog, set())
        if held and not held & session:
            continue
        info = now[prog]
        where = f", attached to {attached[prog][0]} ({attached[prog][1]})" if prog in attached else ""
        who = f"held by pid {','.join(map(str, sorted(held)))}" if held else "held by no process"
        found.append(f"BPF program id {prog} {info.get('type')} {info.get('name', '')!s}{where}, {who}")
    return found


def leaks(before: HostState, session_pid: int, repo: str) -> list[str]:
    """One line per object this session created and left behind."""
    after = take()
    found: list[str] = []
    ours = session_processes(session_pid)
    found += [f"process {pid}: {cmd}" for pid, cmd in ours.items()]
    if os.geteuid() == 0:  # an unprivileged session cannot have made any: what appeared is someone else's
        found += [f"cgroup {p}" for p in sorted(after.cgroups - before.cgroups) if suite_cgroup(p)]
        found += [f"network namespace {n}" for n in sorted(after.netns - before.netns) if suite_named(n)]
        found += [f"link {n} (root network namespace)" for n in sorted(after.links - before.links)
                  if suite_named(n)]
        found += [f"mount {m.point} ({m.fs_type} {m.source})"
                  for m in sorted(after.mounts - before.mounts, key=lambda m: m.point) if suite_mount(m, repo)]
        if before.progs is not None:
            found += leaked_progs(before.progs, session_pid, ours)
    found += [f"temporary {p}" for p in sorted(after.tmp - before.tmp)
              if suite_named(os.path.basename(p)) and owned_by_me(p)]
    return found


def owned_by_me(path: str) -> bool:
    try:
        return os.lstat(path).st_uid == os.geteuid()
    except OSError:
        return False


def settled_leaks(before: HostState, session_pid: int, repo: str, patience: float = 5.0) -> list[str]:
    """Leaks that are still there after `patience` seconds: killed processes take a moment to exit and
    the kernel frees BPF programs and cgroups asynchronously."""
    deadline = time.monotonic() + patience
    while True:
        found = leaks(before, session_pid, repo)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)
