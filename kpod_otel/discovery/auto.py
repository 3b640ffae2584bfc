"""Auto mode: the API server while it answers, the kubelet when it does not, local cgroups last.

The informer keeps running (and retrying with backoff) in every state, so it doubles as the background
probe of the API server: as soon as it has re-listed, auto switches back to it. A fallback source is
switched to only once it has answered (synced), so the agent never sees an empty view in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kpod_otel.discovery.base import PodProvider
from kpod_otel.discovery.kubelet import KubeletProvider
from kpod_otel.model import PodInfo
from kpod_otel.selfmetrics import AgentStats

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("informer", "kubelet", "local")
MODE_ATTR = "kpod.discovery.mode"


def report_mode(stats: AgentStats, active: str, modes: tuple[str, ...] = MODES) -> None:
    """The `kpod.agent.discovery.mode` gauge: 1 for the active mode, 0 for the others."""
    for mode in modes:
        stats.set("kpod.agent.discovery.mode", 1 if mode == active else 0, **{MODE_ATTR: mode})


class AutoProvider(PodProvider):
    mode = "auto"

    def __init__(
        self,
        informer: PodProvider,
        kubelet: KubeletProvider | None,
        stats: AgentStats,
        *,
        fallback_after: float = 60.0,
        local_factory: Callable[[], PodProvider] | None = None,
        check_interval: float | None = None,
    ) -> None:
        self._informer = informer
        self._kubelet = kubelet
        self._stats = stats
        self._fallback_after = fallback_after
        self._local_factory = local_factory
        self._local: PodProvider | None = None
        if check_interval is None:
            poll = kubelet.poll_interval if kubelet is not None else fallback_after
            check_interval = min(1.0, poll / 4, fallback_after / 4)
        self._check_interval = max(0.02, check_interval)
        self._lock = threading.Lock()
        self._active = "informer"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._informer_bad_since: float | None = None
        self._kubelet_bad_since: float | None = None

    @property
    def active_mode(self) -> str:
        with self._lock:
            return self._active

    def start(self) -> None:
        if self._thread is not None:
            return
        report_mode(self._stats, self.active_mode)
        self._informer.start()
        self._informer_bad_since = time.monotonic()  # until the first LIST succeeds
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kpod-discovery-auto", daemon=True)
        self._thread.start()

    def pods(self) -> list[PodInfo]:
        return self._provider(self.active_mode).pods()

    def healthy(self) -> bool:
        return self._provider(self.active_mode).healthy()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._informer.stop()
        if self._kubelet is not None:
            self._kubelet.stop()
        if self._local is not None:
            self._local.stop()

    def _provider(self, mode: str) -> PodProvider:
        if mode == "kubelet" and self._kubelet is not None:
            return self._kubelet
        if mode == "local" and self._local is not None:
            return self._local
        return self._informer

    def _run(self) -> None:
        while not self._stop.wait(self._check_interval):
            try:
                self.step()
            except Exception:  # the decision loop must survive a failing fallback provider
                log.exception("discovery auto mode: unexpected error")
                self._stats.error("discovery", "auto")

    def step(self, now: float | None = None) -> None:
        """One decision; called every check interval by the thread."""
        now = time.monotonic() if now is None else now
        active = self.active_mode
        if self._informer.healthy():
            self._informer_bad_since = None
            if active != "informer":
                self._switch("informer", "the API server answers again")
                self._stop_fallbacks()
            return
        if self._informer_bad_since is None:
            self._informer_bad_since = now
        if now - self._informer_bad_since < self._fallback_after:
            return
        # The API server has failed for fallback_after seconds: the kubelet, then local cgroups.
        kubelet = self._kubelet
        if kubelet is not None:
            kubelet.start()  # no-op while running
            if kubelet.healthy():
                self._kubelet_bad_since = None
                if active != "kubelet":
                    self._switch("kubelet", f"the API server has failed for {self._fallback_after:g}s")
                    self._stop_local()
                return
            if self._kubelet_bad_since is None:
                self._kubelet_bad_since = now
            if now - self._kubelet_bad_since < self._fallback_after:
                return
        if active != "local" and self._local_factory is not None:
            if self._local is None:
                self._local = self._local_factory()
                self._local.start()
            self._switch("local", "neither the API server nor the kubelet answers")

    def _switch(self, to: str, why: str) -> None:
        with self._lock:
            frm, self._active = self._active, to
        log.warning("discovery: switching from %s to %s: %s", frm, to, why)
        self._stats.add("kpod.agent.discovery.mode.switches", 1, **{MODE_ATTR: to})
        report_mode(self._stats, to)

    def _stop_fallbacks(self) -> None:
        if self._kubelet is not None:
            self._kubelet.stop()
        self._kubelet_bad_since = None
        self._stop_local()

    def _stop_local(self) -> None:
        if self._local is not None:
            local, self._local = self._local, None
            local.stop()
