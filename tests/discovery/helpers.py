"""Shared constants and helpers of the discovery tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

API_TOKEN = "kpt-disc-token-one.eyJhbGciOiJSUzI1NiJ9"
ROTATED_TOKEN = "kpt-disc-token-two.eyJhbGciOiJSUzI1NiJ9"

# Short timings so the whole suite runs in seconds; the production defaults are in DiscoveryConfig.
FAST_INFORMER: dict[str, Any] = {"backoff_max": 0.2, "backoff_multiplier": 0.05, "connect_timeout": 2.0,
                                 "list_timeout": 5.0}


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
