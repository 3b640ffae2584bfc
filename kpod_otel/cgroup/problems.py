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
"""

from __future__ import annotations

import errno
import logging
import os
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


class ProblemLog:
    def __init__(self, component: str, stats: ErrorCounter, logger: logging.Logger) -> None:
        self._component = component
        self._stats = stats
        self._log = logger
        self._logged: set[tuple[str, str]] = set()
        self._absent: set[tuple[str, str]] = set()  # (target key, path) of optional files found missing
        self._absent_names: set[str] = set()

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
             optional: bool = False) -> str | None:
        """The text of `path`, or None after accounting the failure to `target_key` (see `os_error`; for an
        `optional` file, see the module's docstring)."""
        if optional and (target_key, path) in self._absent:
            return None
        try:
            return read_small(path)
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
                    still_there: Callable[[], bool] | None = None, optional: bool = False) -> R | None:
        """`parse` of the text of `path` (None when it cannot be read); its malformed lines are counted as
        "parse" errors of `target_key`."""
        text = self.read(target_key, path, still_there, optional)
        if text is None:
            return None
        record = parse(text)
        if record.malformed:
            self.report(target_key, "parse", f"{record.malformed} malformed lines in {os.path.basename(path)}",
                        record.malformed)
        return record

    def prune(self, live_keys: Iterable[str]) -> None:
        """Forget targets that are gone, so the set does not grow with pod churn."""
        live = set(live_keys)
        self._logged = {k for k in self._logged if k[0] in live}
        self._absent = {k for k in self._absent if k[0] in live}


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
