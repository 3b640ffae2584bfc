"""`kpod-otel check`: a table of this node's facts; non-zero exit on fatal problems."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from tests.conftest import HOST, require_bcc
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
    # the host's kind from its mounts (tests/conftest.py), not from the code under test
    expected = {"v2": ("ok", "v2"), "hybrid": ("ok", "hybrid"), "v1": ("warn", "v1 only")}[HOST.kind]
    assert table["cgroup"][0] == expected[0] and table["cgroup"][1].startswith(expected[1])
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


# --- check and run decide eBPF with the same functions ------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
FAKE_BCC = 'raise OSError("libbcc.so.0: cannot open shared object file: No such file or directory")\n'
# every tracefs location the agent looks at, covered by an empty tmpfs in a private mount namespace
HIDE_TRACEFS = ("for d in /sys/kernel/tracing /sys/kernel/debug/tracing; do "
                "if [ -d $d ]; then mount -t tmpfs kpt-no-tracefs $d || exit 97; fi; done; exec \"$@\"")
RUN_OFF = "eBPF metrics are off: "


def _ebpf_decisions(tmp_path: Path, wrap: list[str], **env: str) -> tuple[tuple[str, str], str, str]:
    """(check's eBPF row, run's reason for turning eBPF off or "", check's stdout) under `wrap`."""
    cfg = tmp_path / "kpod.yaml"
    cfg.write_text(f"kpod:\n  profile: custom\n  collectors: {{cpu: {{enabled: true}}}}\n  discovery:\n"
                   f"    mode: local\n  bpf:\n    program-dir: {REPO}/ebpf\n  health:\n    port: 0\n"
                   f"  cgroup:\n    root: /sys/fs/cgroup\n    proc-root: /proc\n    sys-root: /sys\n"
                   f"    kubelet-root: {tmp_path}/kubelet\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KPOD_", "KUBERNETES_"))}
    base.update(env)
    kpod = [sys.executable, "-m", "kpod_otel"]
    check = subprocess.run([*wrap, *kpod, "check", "--config", str(cfg)], env=base, capture_output=True,
                           text=True, timeout=120, cwd=REPO)
    assert check.returncode == 0, check.stdout + check.stderr  # eBPF off is a warning, never a crash
    run = subprocess.run([*wrap, *kpod, "run", "--once", "--console", "--config", str(cfg)], env=base,
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    said = [ln.split(RUN_OFF, 1)[1] for ln in run.stderr.splitlines() if RUN_OFF in ln]
    assert len(said) <= 1, run.stderr  # said once
    reason = said[0].removesuffix(". Running with the cgroup collectors only.") if said else ""
    return rows(check.stdout)["eBPF"], reason, check.stdout


def test_check_and_run_agree_when_bcc_tracefs_or_a_capability_is_missing(tmp_path: Path) -> None:
    require_bcc()
    fake = tmp_path / "no-bcc" / "bcc"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_BCC)
    scenarios: dict[str, tuple[list[str], dict[str, str], str]] = {
        "nothing hidden": ([], {}, ""),
        "bcc raises OSError": ([], {"PYTHONPATH": f"{fake.parent}:{REPO}"}, "bcc is not installed"),
        "no tracefs": (["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE_TRACEFS, "sh"], {},
                       "tracefs is not mounted"),
        "no CAP_SYS_ADMIN, no CAP_BPF": (["setpriv", "--bounding-set", "-sys_admin,-bpf", "--"], {},
                                         "BPF is not permitted"),
    }
    for name, (wrap, env, expected) in scenarios.items():
        (status, detail), run_reason, out = _ebpf_decisions(tmp_path, wrap, **env)
        if not expected:
            assert status == "ok" and run_reason == "", (name, detail, run_reason)
            continue
        assert run_reason.startswith(expected), (name, run_reason)
        assert (status, detail) == ("warn", f"off: {run_reason}"), (name, out)
    # the rows that explain it say the same
    (_, _, out) = _ebpf_decisions(tmp_path, [], PYTHONPATH=f"{fake.parent}:{REPO}")
    assert rows(out)["bcc"][0] == "warn" and "libbcc.so.0" in rows(out)["bcc"][1]
