"""The floor of a cycle: just read the same sources and encode the same points, with no parsing, no
attribution and no transport.

- files: every file the agent opened during one recorded cycle (an audit hook records `open` events),
  read whole with os.open/os.read/os.close; and the files the agent keeps open across cycles (cgroup
  files: opened during the first cycle, not in the recorded one), re-read with os.pread at offset 0 on
  descriptors opened once;
- volumes: statvfs of the same mounts;
- eBPF maps: every per-cgroup map of the loaded programs, read with BPF_MAP_LOOKUP_BATCH into buffers
  allocated once (raw bytes, no decoding);
- interface counters: one RTM_GETSTATS dump (IFLA_STATS_LINK_64 only) per pod network namespace on a
  netlink socket opened once inside it, replies received but not decoded;
- encoding: the same requests the receiver got, already built as protobuf messages, serialized and
  gzipped (level 6) — the least work any encoder must do (building the messages is not counted).
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest


class OpenRecorder:
    """Records the paths of files opened by this process while `on` (audit hooks cannot be removed)."""

    def __init__(self) -> None:
        self.on = False
        self.paths: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.on and event == "open" and isinstance(args[0], str):
            self.paths.append(args[0])

    def files(self) -> list[str]:
        return [p for p in self.paths if os.path.isfile(p)]


def read_files(paths: list[str]) -> int:
    total = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            while chunk := os.read(fd, 65536):
                total += len(chunk)
        finally:
            os.close(fd)
    return total


class MapBatchReader:
    """BPF_MAP_LOOKUP_BATCH of a whole hash map into preallocated buffers (bytes only)."""

    def __init__(self, table: Any) -> None:
        from bcc.libbcc import lib

        self._lookup = lib.bpf_lookup_batch
        self._fd = table.map_fd
        self._cap = table.max_entries
        self._keys = ctypes.create_string_buffer(ctypes.sizeof(table.Key) * self._cap)
        self._values = ctypes.create_string_buffer(ctypes.sizeof(table.Leaf) * self._cap)
        self._key_size = ctypes.sizeof(table.Key)
        self._value_size = ctypes.sizeof(table.Leaf)

    def read(self) -> int:
        in_batch, out_batch, count = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
        total = 0
        while True:
            count.value = self._cap - total
            res = self._lookup(self._fd, ctypes.byref(in_batch) if total else None, ctypes.byref(out_batch),
                               ctypes.byref(self._keys, self._key_size * total),
                               ctypes.byref(self._values, self._value_size * total), ctypes.byref(count))
            err = ctypes.get_errno()
            total += count.value
            if res != 0:
                if err not in (errno.ENOENT, 0):
                    raise OSError(err, os.strerror(err))
                return total
            if total >= self._cap or count.value == 0:
                return total
            in_batch.value = out_batch.value


_RTM_GETSTATS = 94
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_DONE = 3


class NetlinkFloor:
    """One RTM_GETSTATS dump per namespace; replies are received, not decoded."""

    def __init__(self, ns_paths: list[str]) -> None:
        from kpod_otel.collectors.iface_net import NetlinkStats

        opener = NetlinkStats()
        self._socks = []
        for path in ns_paths:
            sock = opener._open_in(path)  # the collector's own way into a namespace
            sock.bind((0, 0))
            self._socks.append(sock)

    def read(self) -> int:
        got = 0
        for seq, sock in enumerate(self._socks, 1):
            body = struct.pack("=BBHII", socket.AF_UNSPEC, 0, 0, 0, 1)  # IFLA_STATS_LINK_64 only
            sock.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETSTATS, _NLM_F_REQUEST_DUMP, seq, 0) + body)
            done = False
            while not done:
                data = sock.recv(1 << 16)
                got += len(data)
                offset = 0
                while offset + 16 <= len(data):
                    length, mtype = struct.unpack_from("=IH", data, offset)
                    if mtype == _NLMSG_DONE:
                        done = True
                        break
                    offset += (length + 3) & ~3
        return got

    def close(self) -> None:
        for sock in self._socks:
            sock.close()


def encode(requests: list[ExportMetricsServiceRequest]) -> int:
    """Serialize and gzip the requests; returns the gzipped size."""
    return sum(len(gzip.compress(r.SerializeToString(), compresslevel=6)) for r in requests)


class KeptFloor:
    """Files kept open: one os.pread at offset 0 each (what the agent's kept cgroup files cost at least)."""

    def __init__(self, paths: list[str]) -> None:
        self._fds = []
        for path in paths:
            try:
                self._fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                continue

    def read(self) -> int:
        return sum(len(os.pread(fd, 65536, 0)) for fd in self._fds)

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)


def floor_parts(files: list[str], mounts: list[str], maps: list[MapBatchReader], netlink: NetlinkFloor,
                requests: list[ExportMetricsServiceRequest], kept: KeptFloor) -> dict[str, Callable[[], Any]]:
    return {
        "files": lambda: read_files(files),
        "kept files": kept.read,
        "statvfs": lambda: [os.statvfs(m) for m in mounts],
        "maps": lambda: [r.read() for r in maps],
        "netlink": netlink.read,
        "serialize+gzip": lambda: encode(requests),
    }
