"""Which mappings release_compiler_memory() hands back: only the compiler libraries'."""

from __future__ import annotations

import mmap
from pathlib import Path

from kpod_otel.bpf.compiler_memory import _compiler_mappings, release_compiler_memory

MAPS = """\
55d0c7a00000-55d0c7a2c000 r--p 00000000 fe:01 1048 /usr/bin/python3.11
7f1a20000000-7f1a24c00000 r-xp 00a00000 fe:01 2233 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f1a24c00000-7f1a25000000 r--p 05200000 fe:01 2233 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f1a30000000-7f1a32000000 r-xp 00400000 fe:01 2301 /usr/lib/llvm-14/lib/libclang-cpp.so.14
7f1a40000000-7f1a40100000 r-xp 00000000 fe:01 2400 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
7f1a50000000-7f1a50021000 rw-p 00000000 00:00 0
7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0                          [stack]
"""


def test_only_llvm_and_clang_mappings_are_selected() -> None:
    assert _compiler_mappings(MAPS) == [
        (0x7F1A20000000, 0x7F1A24C00000),
        (0x7F1A24C00000, 0x7F1A25000000),
        (0x7F1A30000000, 0x7F1A32000000),
    ]


def test_paged_out_compiler_pages_keep_their_contents(tmp_path: Path) -> None:
    """A file mapped under a compiler library's name is selected and handed to MADV_PAGEOUT (and the
    heap trimmed); what the mapping reads afterwards is still the file's bytes."""
    lib = tmp_path / "libLLVM-kpt-test.so"
    content = bytes(range(256)) * 4096 * 4  # 4 MiB
    lib.write_bytes(content)
    with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert mapped[:] == content  # touch every page
        maps_text = Path("/proc/self/maps").read_text()
        ours = [line.split()[0] for line in maps_text.splitlines() if line.endswith(str(lib))]
        assert ours, "the test file is not mapped"
        selected = {f"{start:x}-{end:x}" for start, end in _compiler_mappings(maps_text)}
        assert set(ours) <= selected
        release_compiler_memory()
        assert mapped[:] == content
    release_compiler_memory(str(tmp_path / "missing"))  # an unreadable maps file is ignored
