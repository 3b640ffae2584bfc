"""Per-target problem reporting for the cgroup/procfs collectors: count every occurrence, log once; and the
one way those collectors read a kernel file (`read`, `read_parsed`), so that a vanished, missing or malformed
file is accounted the same way everywhere.

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
        kind = "vanished" if is_vanished(exc) else "read"
        if exc.errno == errno.ENOENT and (
                (what.startswith("/") and os.path.isdir(os.path.dirname(what)))
                or (still_there is not None and still_there())):
            kind = "unsupported"
        self.report(target_key, kind, f"{what}: {exc.strerror or exc}")

    def read(self, target_key: str, path: str, still_there: Callable[[], bool] | None = None) -> str | None:
        """The text of `path`, or None after accounting the failure to `target_key` (see `os_error`)."""
        try:
            with open(path) as f:
                return f.read()
        except OSError as exc:
            self.os_error(target_key, path, exc, still_there)
            return None

    def read_parsed(self, target_key: str, path: str, parse: Callable[[str], R],
                    still_there: Callable[[], bool] | None = None) -> R | None:
        """`parse` of the text of `path` (None when it cannot be read); its malformed lines are counted as
        "parse" errors of `target_key`."""
        text = self.read(target_key, path, still_there)
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
