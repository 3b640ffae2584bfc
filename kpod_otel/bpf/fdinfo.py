"""Run time, run count and skipped runs of a loaded BPF program, from /proc/<pid>/fdinfo/<prog fd>."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProgRunStats:
    run_time_ns: int
    run_cnt: int
    # Runs the kernel skipped because the program would have nested in another tracing program on the
    # same CPU (kernel >= 5.12; 0 where not shown): events the program never saw.
    recursion_misses: int = 0


def parse_prog_fdinfo(text: str) -> ProgRunStats | None:
    """`run_time_ns`, `run_cnt` (and `recursion_misses`) from fdinfo text; None when the kernel does not
    show the first two."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("run_time_ns", "run_cnt", "recursion_misses"):
            try:
                values[key.strip()] = int(value.strip())
            except ValueError:
                return None
    if "run_time_ns" not in values or "run_cnt" not in values:
        return None
    return ProgRunStats(values["run_time_ns"], values["run_cnt"], values.get("recursion_misses", 0))
