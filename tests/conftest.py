"""Shared test helpers. Under CI=true, a test that would skip for lack of root/BPF fails instead."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (or, in CI, fail) when a machine capability the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (cgroups, namespaces, mounts, BPF)")


def require_bcc() -> None:
    require_root()
    try:
        import bcc  # noqa: F401
    except ImportError:
        require(False, "needs bcc (Debian python3-bpfcc, linked into the venv by scripts/setup.sh)")
