"""Per-target problem reporting for the cgroup/procfs collectors: count every occurrence, log once; and the
one way those collectors read a kernel file (`read`, `read_parsed`), so that a vanished, missing or malformed
file is accounted the same way everywhere.

Optional files (`optional=True`) are those a kernel or a cgroup may simply not have: `*.pressure` (no
CONFIG_PSI, `psi=0`, or `cgroup.pressure` turned off), a v1 controller's files. Their absence is a fact about
the node, not an error of each cycle: the first miss in a cgroup that exists is counted once
(`error.type=unsupported`), the first miss of a file *name* is logged once, and that file is not tried again
for that target.

A pod that is being deleted makes every collector fail on it for a cycle or two (its cgroup, pids and
netns vanish); that is normal and must not flood the log, but it is still counted in
`kpod.agent.errors{kpod.component, error.type}`.

Cgroup files are read thousands of times per cycle, and opening a kernfs file costs more than reading it
(path walk, an open-file record): `read(..., keep=True)` keeps the file open (`KeptFiles`) and re-reads it
from offset 0 with `pread`, which makes kernfs generate its content afresh, as an open would. A kept file
of a removed cgroup fails with ENODEV; it is then closed and the path opened again, so a vanished
cgroup is accounted exactly as without keeping. A file not read for a whole cycle (its container or
pod left) is closed at the next `prune`; how many stay open is bounded (`open_files_budget`).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from kpod_otel.cgroup.fs import is_vanished


class ErrorCounter(Protocol):
    """Where errors are counted (the agent's `AgentStats`)."""

    def error(self, component: str, kind: str, amount: int = 1) -> None: ...


class Parsed(Protocol):
    """A record of a pure parser: it counts the lines it had to skip."""

    @property
    def malformed(self) -> int: ...


R = TypeVar("R", bound=Parsed)

# File descriptors left for everything but kept cgroup files (sockets, BPF maps and programs, netns and
# netlink, the Kubernetes client), and how many collectors keep files (cpu, memory, disk, one spare): each
# `KeptFiles` may hold (RLIMIT_NOFILE soft limit - reserve) // shares. docs/architecture.md: the budget.
RESERVED_FDS = 1024
KEEPING_COLLECTORS = 4


def open_files_budget() -> int:
    """How many cgroup files one collector may keep open under the current RLIMIT_NOFILE (0: none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, (soft - RESERVED_FDS) // KEEPING_COLLECTORS)


class KeptFiles:
    """Kernel files kept open across cycles, by path, in two generations: `next_cycle()` closes those not
    read since the previous call, so files of containers that left are closed a cycle later and the number
    kept follows the node's current containers. At most `limit` are kept; beyond it files are opened and
    closed per read, as without keeping."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._fds: dict[str, int] = {}  # read since the last next_cycle()
        self._previous: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._fds) + len(self._previous)

    def read(self, path: str) -> str | None:
        """The text of `path` through its kept descriptor; None when it has none, or when that descriptor
        failed (it is closed: the caller opens `path` again, which accounts for a vanished file)."""
        fd = self._fds.get(path)
        if fd is None:
            fd = self._previous.pop(path, None)
            if fd is None:
                return None
            self._fds[path] = fd
        try:
            return _pread_text(fd)
        except OSError:
            del self._fds[path]
            os.close(fd)
            return None

    def open_read(self, path: str) -> str:
        """The text of `path`, opened now, and kept open when the budget allows."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = _pread_text(fd)
        except BaseException:
            os.close(fd)
            raise
        if len(self._fds) + len(self._previous) < self.limit:
            self._fds[path] = fd
        else:
            os.close(fd)
        return text

    def next_cycle(self) -> None:
        for fd in self._previous.values():
            os.close(fd)
        self._previous, self._fds = self._fds, {}

    def close(self) -> None:
        for fd in (*self._fds.values(), *self._previous.values()):
            os.close(fd)
        self._fds, self._previous = {}, {}


class ProblemLog:
    def __init__(self, component: str, stats: ErrorCounter, logger: logging.Logger) -> None:
        self._component = component
        self._stats = stats
        self._log = logger
        self._logged: set[tuple[str, str]] = set()
        self._absent: set[tuple[str, str]] = set()  # (target key, path) of optional files found missing
        self._absent_names: set[str] = set()
        self.kept = KeptFiles(open_files_budget())

    def report(self, target_key: str, kind: str, message: str, amount: int = 1) -> None:
        """Count `amount` errors of `kind` and log the first one for this target and kind."""
        self._stats.error(self._component, kind, amount)
        if (target_key, kind) in self._logged:
            return
        self._logged.add((target_key, kind))
        level = logging.INFO if kind == "vanished" else logging.WARNING
        self._log.log(level, "%s: %s: %s (further %s errors for it are counted, not logged)",
                      self._component, target_key, message, kind)

    def os_error(self, target_key: str, what: str, exc: OSError,
                 still_there: Callable[[], bool] | None = None) -> None:
        """A failed read of the file or object at `what`: "vanished" when it went away, "unsupported"
        when it is missing from something that still exists (its directory is there but the file is
        not: a controller not enabled for that cgroup; or `still_there()` says the cgroup exists, just
        not in this v1 controller's hierarchy), "read" otherwise."""
        self.report(target_key, _kind(what, exc, still_there), f"{what}: {exc.strerror or exc}")

    def read(self, target_key: str, path: str, still_there: Callable[[], bool] | None = None,
             optional: bool = False, keep: bool = False) -> str | None:
        """The text of `path`, or None after accounting the failure to `target_key` (see `os_error`; for an
        `optional` file, see the module's docstring). `keep`: keep the file open for the next cycles (a
        cgroup file; not a file whose path can name another object later, such as /proc/<pid>/...)."""
        if optional and (target_key, path) in self._absent:
            return None
        if keep:
            text = self.kept.read(path)
            if text is not None:
                return text
        try:
            return self.kept.open_read(path) if keep else read_small(path)
        except OSError as exc:
            kind = _kind(path, exc, still_there)
            if optional and kind == "unsupported":
                self._absent_file(target_key, path)
            else:
                self.report(target_key, kind, f"{path}: {exc.strerror or exc}")
            return None

    def _absent_file(self, target_key: str, path: str) -> None:
        self._absent.add((target_key, path))
        self._stats.error(self._component, "unsupported")
        name = os.path.basename(path)
        if name not in self._absent_names:
            self._absent_names.add(name)
            self._log.warning("%s: %s does not exist (first seen for %s, %s): its metrics are absent for the "
                              "containers without it; each is counted once as an unsupported error",
                              self._component, name, target_key, path)

    def read_parsed(self, target_key: str, path: str, parse: Callable[[str], R],
                    still_there: Callable[[], bool] | None = None, optional: bool = False,
                    keep: bool = False) -> R | None:
        """`parse` of the text of `path` (None when it cannot be read); its malformed lines are counted as
        "parse" errors of `target_key`."""
        text = self.read(target_key, path, still_there, optional, keep)
        if text is None:
            return None
        return self.parsed(target_key, path, parse(text))

    def parsed(self, target_key: str, path: str, record: R) -> R:
        """`record`, parsed from `path`, after counting its malformed lines as "parse" errors."""
        if record.malformed:
            self.report(target_key, "parse", f"{record.malformed} malformed lines in {os.path.basename(path)}",
                        record.malformed)
        return record

    def prune(self, live_keys: Iterable[str]) -> None:
        """Forget targets that are gone, so the set does not grow with pod churn; once per cycle: close the
        kept files not read since the previous call."""
        self.kept.next_cycle()
        live = set(live_keys)
        self._logged = {k for k in self._logged if k[0] in live}
        self._absent = {k for k in self._absent if k[0] in live}


    def close(self) -> None:
        self.kept.close()


def _kind(what: str, exc: OSError, still_there: Callable[[], bool] | None) -> str:
    if exc.errno == errno.ENOENT and (
            (what.startswith("/") and os.path.isdir(os.path.dirname(what)))
            or (still_there is not None and still_there())):
        return "unsupported"
    return "vanished" if is_vanished(exc) else "read"


def read_small(path: str) -> str:
    """The text of a small kernel file with os.open/os.read: about a third of `open(path).read()`'s CPU (no
    Python file object), which matters at thousands of files per cycle. Reads to the end (a multi-record
    seq_file such as mountinfo returns a page or so per read). Bytes that are not UTF-8 are replaced,
    never raised."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        if data:
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks) if len(chunks) > 1 else data
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def _pread_text(fd: int) -> str:
    """`read_small` of an open file, from offset 0 (kernfs generates the content again at offset 0). A
    seq_file may return a page at a time: a first read of a page or more goes on to the end."""
    data = os.pread(fd, 65536, 0)
    if len(data) >= 4096:
        chunks = [data]
        offset = len(data)
        while chunk := os.pread(fd, 65536, offset):
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
    return data.decode("utf-8", "replace")
