"""The interface every discovery mode implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from kpod_otel.model import PodInfo


class PodProvider(ABC):
    """A source of the pods on this node.

    `start()` may begin background work (a watch thread, a poller); `pods()` returns the current view
    without blocking on the network, so the collection cycle never waits for discovery.
    """

    mode: str  # "informer" | "kubelet" | "local" | "auto"

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def pods(self) -> list[PodInfo]:
        """The pods currently known (all namespaces; filters are applied by the caller)."""

    def healthy(self) -> bool:
        """True while the provider's source answers (used by auto mode and /healthz)."""
        return True

    @abstractmethod
    def stop(self) -> None: ...
