"""`kpod-otel check`: a table of this node's facts; non-zero exit on fatal problems."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from tests.fakes.otlp import OtlpReceiver


def run_check(cfg: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_", "KUBERNETES_"))}
    return subprocess.run([sys.executable, "-m", "kpod_otel", "check", "--config", str(cfg)],
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def rows(out: str) -> dict[str, tuple[str, str]]:
    result = {}
    for line in out.splitlines()[1:]:
        name, status, detail = (part.strip() for part in line.split("  ", 2)) if "  " in line else (line, "", "")
        # names may hold one space ("kernel headers"): split on the status column instead
        for st in ("ok", "warn", "FAIL"):
            marker = f"  {st} "
            if marker in line:
                name, detail = line.split(marker, 1)
                status = st
                break
        result[name.strip()] = (status, detail.strip())
    return result


def test_check_on_this_machine(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start("grpc")
    try:
        cfg = tmp_path / "kpod.yaml"
        cfg.write_text("kpod:\n  discovery:\n    mode: local\n  cgroup:\n    root: /sys/fs/cgroup\n"
                       "    proc-root: /proc\n    sys-root: /sys\n")
        proc = run_check(cfg, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    finally:
        receiver.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = rows(proc.stdout)
    assert table["kernel"] == ("ok", platform.release())
    expected_mode = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "hybrid"
    assert table["cgroup"][0] == "ok" and table["cgroup"][1].startswith(expected_mode)
    assert table["proc"][0] == "ok"
    assert table["OTLP exporter"][0] == "ok" and receiver.endpoint.split("//")[1] in table["OTLP exporter"][1]
    assert table["discovery"][0] == "ok"


def test_check_fails_without_cgroups_and_says_why(tmp_path: Path) -> None:
    cfg = tmp_path / "kpod.yaml"
    cfg.write_text(f"kpod:\n  discovery:\n    mode: local\n  cgroup:\n    root: {tmp_path}/nowhere\n"
                   f"    proc-root: {tmp_path}/noproc\n")
    proc = run_check(cfg)
    assert proc.returncode == 1
    table = rows(proc.stdout)
    assert table["cgroup"][0] == "FAIL" and "does not exist" in table["cgroup"][1]
    assert table["proc"][0] == "FAIL"
