"""The opt-in allocation tracer names the site that allocated between two dumps."""

from __future__ import annotations

import tracemalloc

import pytest

from kpod_otel.memory_trace import AllocationTracer, tracer_from_env


def test_second_dump_names_what_grew_since_the_first() -> None:
    tracer = AllocationTracer(frames=1)
    tracemalloc.start(1)
    try:
        first = tracer.dump()
        kept = [bytearray(1024) for _ in range(4096)]  # 4 MiB from this line, alive at the second dump
        second = tracer.dump()
    finally:
        tracemalloc.stop()
    assert first.startswith("tracemalloc dump 1:") and second.startswith("tracemalloc dump 2:")
    site = next(line for line in second.splitlines() if __file__ + ":" in line)
    grown_kb = float(site.split()[0])
    assert grown_kb >= 4096 and len(kept) == 4096


@pytest.mark.parametrize(("value", "frames"), [("", None), ("x", None), ("0", 1), ("7", 7)])
def test_tracer_from_env(monkeypatch: pytest.MonkeyPatch, value: str, frames: int | None) -> None:
    monkeypatch.setenv("KPOD_TRACEMALLOC", value)
    tracer = tracer_from_env()
    assert (tracer.frames if tracer else None) == frames
