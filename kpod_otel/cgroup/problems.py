"""Per-target problem reporting for the cgroup/procfs collectors: count every occurrence, log once.

A pod that is being deleted makes every collector fail on it for a cycle or two (its cgroup, pids and
netns vanish); that is normal and must not flood the log, but it is still counted in
`kpod.agent.errors{kpod.component, error.type}`.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable

from kpod_otel.cgroup.fs import is_vanished
from kpod_otel.selfmetrics import AgentStats


class ProblemLog:
    def __init__(self, component: str, stats: AgentStats, logger: logging.Logger) -> None:
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

    def prune(self, live_keys: Iterable[str]) -> None:
        """Forget targets that are gone, so the set does not grow with pod churn."""
        live = set(live_keys)
        self._logged = {k for k in self._logged if k[0] in live}
