"""Run time and run count of a loaded BPF program, from /proc/<pid>/fdinfo/<prog fd>."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProgRunStats:
    run_time_ns: int
    run_cnt: int


def parse_prog_fdinfo(text: str) -> ProgRunStats | None:
    """`run_time_ns` and `run_cnt` from fdinfo text; None when the kernel does not show them."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("run_time_ns", "run_cnt"):
            try:
                values[key.strip()] = int(value.strip())
            except ValueError:
                return None
    if len(values) != 2:
        return None
    return ProgRunStats(values["run_time_ns"], values["run_cnt"])
