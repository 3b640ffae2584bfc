"""Give back the memory that compiling the programs took, once they are loaded.

bcc compiles in-process with LLVM/clang. Afterwards (measured on this machine class, comprehensive
profile, bench/agent_memory.py, docs/performance.md):
- glibc keeps ~40 MB of freed compiler heap in its arenas: `malloc_trim(0)` returns it to the kernel;
- LLVM's and clang's code pages touched by the compilation (~120 MB of file-backed RSS) are never used
  again while the programs run: `madvise(MADV_PAGEOUT)` (Linux >= 5.4) asks the kernel to reclaim them.
  Their contents are preserved (clean file pages are re-read on demand, dirty private pages stay), so
  a later compilation still works; pages that other processes also map are left alone by the kernel.
Both are hints: any failure is ignored.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

MADV_PAGEOUT = 21
_COMPILER_LIBRARIES = ("libLLVM", "libclang")


def _compiler_mappings(maps_text: str) -> list[tuple[int, int]]:
    """Address ranges of the compiler libraries' mappings in a /proc/<pid>/maps text."""
    ranges = []
    for line in maps_text.splitlines():
        parts = line.split()
        if len(parts) > 5 and any(lib in parts[5].rsplit("/", 1)[-1] for lib in _COMPILER_LIBRARIES):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((start, end))
    return ranges


def release_compiler_memory(maps_path: str = "/proc/self/maps") -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        with open(maps_path) as f:
            ranges = _compiler_mappings(f.read())
    except OSError:
        return
    for start, end in ranges:
        if madvise(start, end - start, MADV_PAGEOUT) != 0:
            log.debug("madvise(MADV_PAGEOUT) of the compiler's pages failed: errno %d", ctypes.get_errno())
            return
