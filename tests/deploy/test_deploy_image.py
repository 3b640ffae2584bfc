"""The image recipe, proven without Docker: deploy/image/install.sh runs in a debootstrapped bookworm root
(deploy/image/chroot.sh), and the result runs the agent's CLI and the privileged operations the agent
performs, with the DaemonSet's mounts and only the DaemonSet's capabilities.

From scratch (no cache, as in CI) this measured 26-29 s of debootstrap plus 30-46 s of install.sh on
this machine class (58 s in all, once); with the debootstrap root cached, ~35 s. See docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kpod_otel
from tests import hoststate
from tests.conftest import HOST, host_needs_v2, require, require_root
from tests.deploy.deploy_manifests import (
    BASE,
    REPO,
    agent_container,
    env_for_config,
    kustomize,
    one,
    quantity,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

CHROOT_SH = REPO / "deploy" / "image" / "chroot.sh"
CACHE = Path(os.environ.get("KPOD_IMAGE_CACHE", REPO / ".cache" / "image"))
ROOT = CACHE / "root"
NODE_NAME, NODE_IP = "node-a.example", "192.0.2.10"
BUILD_TIMEOUT_S = 900


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, from the kernel's mount table (not from our bookkeeping)."""
    top = str(path.resolve())
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == top or point.startswith(top + "/"):
            out.append(point)
    return out


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    require_root()
    require(shutil.which("debootstrap") is not None, "needs debootstrap (scripts/setup.sh installs it)")
    require(shutil.which("kubectl") is not None, "needs kubectl")
    proc = subprocess.run([str(CHROOT_SH), "build"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    timings = [ln for ln in proc.stderr.splitlines() if "timing:" in ln]
    print("\n".join(timings))
    assert proc.returncode == 0, f"image build failed:\n{proc.stderr[-4000:]}"
    assert (ROOT / ".built").exists()
    assert mounts_under(ROOT) == [], "chroot.sh build left mounts behind"
    yield ROOT
    assert mounts_under(ROOT) == [], "chroot.sh run left mounts behind"


def run_in_image(*cmd: str, caps: list[str] | None = None, headers: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
    args = [str(CHROOT_SH), "run"]
    if not headers:
        args.append("--no-headers")
    if caps is not None:
        args += ["--caps", ",".join(caps)]
    return subprocess.run([*args, "--", *cmd], capture_output=True, text=True, timeout=timeout)


# Capability numbers (linux/capability.h; kernel ABI).
CAP_BITS = {"DAC_READ_SEARCH": 2, "NET_ADMIN": 12, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_RESOURCE": 24,
            "PERFMON": 38, "BPF": 39}


def host_bounding_set() -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("CapBnd:"))
    return int(line.split()[1], 16)


def daemonset_caps() -> list[str]:
    caps: list[str] = agent_container(kustomize(BASE))["securityContext"]["capabilities"]["add"]
    return caps


def cli_present() -> None:
    # The CLI (kpod_otel/cli.py) is the foundation's; until it is merged this branch cannot run it.
    if not (REPO / "kpod_otel" / "cli.py").exists():
        pytest.skip("kpod_otel/cli.py is not on this branch yet")


# --- what the image contains ---------------------------------------------------------------------------


def test_image_layout(image_root: Path) -> None:
    assert (image_root / "etc/kpod-otel/config.yaml").read_bytes() == (BASE / "kpod-otel.yaml").read_bytes()
    ebpf = REPO / "ebpf"
    if ebpf.is_dir():
        shipped = sorted(p.relative_to(ebpf).as_posix() for p in ebpf.rglob("*") if p.is_file())
        installed = sorted(p.relative_to(image_root / "app/bpf").as_posix()
                           for p in (image_root / "app/bpf").rglob("*") if p.is_file())
        assert installed == shipped
    assert os.readlink(image_root / "usr/local/bin/kpod-otel") == "/opt/kpod-otel/bin/kpod-otel"
    assert list((image_root / "var/lib/apt/lists").glob("*_Packages")) == []  # apt lists cleaned
    assert not any((image_root / "src").iterdir())  # the source was a bind mount, not copied in
    os_release = (image_root / "etc/os-release").read_text()
    assert 'VERSION_CODENAME=bookworm' in os_release


def test_python_and_bcc_in_the_image(image_root: Path) -> None:
    code = "import sys, bcc, kpod_otel; print(sys.version_info[:2], bcc.__file__, kpod_otel.__version__)"
    out = run_in_image("/opt/kpod-otel/bin/python", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["(3,", "11)"]
    assert "/opt/kpod-otel/lib/python3.11/site-packages/bcc/" in out.stdout
    assert out.stdout.split()[-1] == kpod_otel.__version__


# --- the CLI ---------------------------------------------------------------------------------------------


def test_version(image_root: Path) -> None:
    cli_present()
    out = run_in_image("kpod-otel", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"kpod-otel {kpod_otel.__version__}"


@pytest.fixture
def fake_api_server() -> Iterator[tuple[str, int]]:
    """A TCP listener standing in for the API server address the kubelet injects into every pod
    (KUBERNETES_SERVICE_HOST/PORT); `check` only tests that it is reachable."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield "127.0.0.1", srv.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        srv.close()


def check_rows(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines()[1:]:
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        if len(parts) >= 2:
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def daemonset_env(api: tuple[str, int]) -> dict[str, str]:
    """The container's environment: the DaemonSet's variables (downward API filled in) plus the API
    server address the kubelet injects into every pod."""
    env = env_for_config(agent_container(kustomize(BASE)), NODE_NAME, NODE_IP)
    return env | {"KUBERNETES_SERVICE_HOST": api[0], "KUBERNETES_SERVICE_PORT": str(api[1])}


def kpod_cmd(env: dict[str, str], command: str) -> list[str]:
    """`kpod-otel` as the DaemonSet runs it (its args), with `command` in place of "run"."""
    args = [command if a == "run" else a for a in agent_container(kustomize(BASE))["args"]]
    return ["env", *(f"{k}={v}" for k, v in env.items()), "kpod-otel", *args]


def daemonset_check_cmd(api: tuple[str, int]) -> list[str]:
    return kpod_cmd(daemonset_env(api), "check")


def test_check_passes_with_the_daemonsets_mounts_env_and_capabilities(
    image_root: Path, fake_api_server: tuple[str, int]
) -> None:
    cli_present()
    out = run_in_image(*daemonset_check_cmd(fake_api_server), caps=daemonset_caps())
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = check_rows(out.stdout)
    for name in ("bcc", "kernel headers", "tracefs", "proc", "discovery"):
        assert rows[name][0] == "ok", (name, rows[name])
    # a pure v1 host is a warning (no eBPF attribution); v2 and hybrid are fine
    assert rows["cgroup"][0] == ("warn" if HOST.kind == "v1" else "ok"), rows["cgroup"]
    # Capabilities: check says what run decides from them (BPF: SYS_ADMIN, or BPF with PERFMON; setns into
    # pod namespaces: SYS_ADMIN), for what this machine itself can grant (its own bounding set).
    granted = {c for c in daemonset_caps() if host_bounding_set() >> CAP_BITS[c] & 1}
    status, detail = rows["capabilities"]
    if "SYS_ADMIN" in granted:
        assert status == "ok", detail
    else:
        assert status == "warn" and "CAP_SYS_ADMIN" in detail, detail


def test_check_without_kernel_headers_says_how_to_fix_it(
    image_root: Path, fake_api_server: tuple[str, int]
) -> None:
    cli_present()
    out = run_in_image(*daemonset_check_cmd(fake_api_server), caps=daemonset_caps(), headers=False)
    print(out.stdout)
    status, detail = check_rows(out.stdout)["kernel headers"]
    assert status != "ok"
    assert "/lib/modules" in detail and "/usr/src" in detail


def test_check_fails_without_host_proc(image_root: Path, fake_api_server: tuple[str, int]) -> None:
    """With cgroup.proc-root pointing where nothing is mounted, check exits non-zero (a wrong mount
    layout is caught before the agent runs)."""
    cli_present()
    env = daemonset_env(fake_api_server) | {"KPOD_CGROUP_PROC_ROOT": "/nonexistent/proc"}
    out = run_in_image(*kpod_cmd(env, "check"), caps=daemonset_caps())
    assert out.returncode != 0
    assert check_rows(out.stdout)["proc"][0] == "FAIL"


# --- capabilities: each one the DaemonSet adds is needed ------------------------------------------------


@pytest.fixture(scope="module")
def probe_setup(image_root: Path) -> Iterator[list[str]]:
    """An unprivileged process of another user, a volume-like dir only its owner may search, an empty
    cgroup v2 to attach to; returns the probe's command line inside the image."""
    v2 = Path(host_needs_v2())
    (image_root / "tmp/cap_probe.py").write_text((Path(__file__).parent / "cap_probe.py").read_text())
    dac = image_root / "tmp/kpt-deploy-dac"
    (dac / "vol").mkdir(parents=True, exist_ok=True)
    os.chown(dac, 65534, 65534)
    dac.chmod(0o700)
    cg = v2 / "kpt-deploy-probe"
    cg.mkdir(exist_ok=True)
    other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "600"])
    try:
        yield ["/opt/kpod-otel/bin/python", "/tmp/cap_probe.py", str(other.pid), "/tmp/kpt-deploy-dac/vol",
               "/host" + str(cg)]
    finally:
        other.kill()
        other.wait()
        cg.rmdir()
        shutil.rmtree(dac)


def probe(cmd: list[str], caps: list[str]) -> dict[str, str]:
    out = run_in_image(*cmd, caps=caps)
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# capability(ies) removed -> the operations that must then fail. BPF and PERFMON are implied by SYS_ADMIN
# in the kernel's checks, so their necessity shows once SYS_ADMIN is gone as well.
WITHOUT: dict[tuple[str, ...], set[str]] = {
    ("SYS_PTRACE",): {"open_other_users_netns"},
    ("DAC_READ_SEARCH",): {"statvfs_other_users_volume"},
    ("SYS_ADMIN",): {"setns", "cgroup_skb"},
    ("SYS_ADMIN", "BPF"): {"setns", "cgroup_skb", "bpf_map", "tracepoint"},
    ("SYS_ADMIN", "PERFMON"): {"setns", "cgroup_skb", "tracepoint"},
}


def test_every_operation_works_with_the_daemonsets_capabilities(probe_setup: list[str]) -> None:
    result = probe(probe_setup, daemonset_caps())
    assert result == {op: "ok" for op in result}, result
    assert len(result) == 6


@pytest.mark.parametrize("removed", list(WITHOUT), ids=["-".join(r) for r in WITHOUT])
def test_each_capability_is_needed(probe_setup: list[str], removed: tuple[str, ...]) -> None:
    caps = daemonset_caps()
    assert set(removed) <= set(caps)
    result = probe(probe_setup, [c for c in caps if c not in removed])
    failed = {op for op, res in result.items() if res != "ok"}
    assert failed == WITHOUT[removed], result


def test_sys_resource_is_only_for_old_kernels() -> None:
    """CAP_SYS_RESOURCE raises RLIMIT_MEMLOCK, which limits BPF memory only before kernel 5.11 (memcg
    accounting since): not observable on this kernel, so asserted as the reason it cannot be tested."""
    assert "SYS_RESOURCE" in daemonset_caps()
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert (major, minor) >= (5, 11)


def test_daemonset_grants_what_run_and_check_decide_by() -> None:
    """The capabilities the agent decides eBPF and netlink by (kpod_otel/bpf/support.py) are all granted."""
    from kpod_otel.bpf import support

    names = {n.removeprefix("CAP_") for n in dir(support) if n.startswith("CAP_")}
    assert names == {"SYS_ADMIN", "BPF", "PERFMON"}
    assert all(CAP_BITS[n] == getattr(support, f"CAP_{n}") for n in names)
    assert names <= set(daemonset_caps())


def test_dockerfile_runs_install_sh_on_bookworm_slim() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm-slim$", text, re.M)
    run = r"RUN --mount=type=bind,source=\.,target=/src \\\n\s+/bin/sh /src/deploy/image/install.sh /src"
    assert re.search(run, text)
    assert len(re.findall(r"^RUN ", text, re.M)) == 1  # every install step is in install.sh
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    ds = one(kustomize(BASE), "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert entry == ["kpod-otel"]
    assert cmd == ds["args"]  # the image runs as the DaemonSet runs it


# --- the agent itself, run from the image as the DaemonSet runs it ----------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def health_wired() -> bool:
    """Whether the agent starts kpod_otel.health's server (the lead wires it into the loop)."""
    return any("start_health_server" in p.read_text()
               for p in (REPO / "kpod_otel").rglob("*.py") if p.name != "health.py")


def http_status(port: int, path: str) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def resource_attrs(rm: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in rm.resource.attributes}


@pytest.fixture
def workload() -> Iterator[str]:
    """A process in a top-level cgroup of its own in every hierarchy, so that local discovery has a
    workload to measure on any machine (not only where others left cgroups)."""
    name = f"kpt-deploy-workload-{os.getpid()}"
    # the controllers the agent reads (cpuset would first need cpus and mems configured)
    dirs = [Path(hoststate.CGROUP_ROOT, h, name) for h in ("memory", "blkio", "cpu", "pids") if h in HOST.v1]
    if HOST.v2_dir:
        dirs.append(Path(HOST.v2_dir, name))
    def join() -> None:
        for d in dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    proc = None
    try:
        for d in dirs:
            d.mkdir()
        proc = subprocess.Popen(["sleep", "600"], preexec_fn=join)
        yield name
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for d in dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # the killed process is still leaving it
                    time.sleep(0.05)


def test_agent_runs_from_the_image_exports_and_flushes_on_sigterm(
    image_root: Path, fake_api_server: tuple[str, int], workload: str
) -> None:
    """`kpod-otel run` with the image's config, the DaemonSet's environment, mounts and capabilities
    (local discovery, as there is no cluster; a 2 s cycle to keep it short) exports gzip OTLP/gRPC to a
    real receiver, answers its probes, and on SIGTERM makes a final export and exits 0 within the
    DaemonSet's terminationGracePeriodSeconds."""
    cli_present()
    from tests.fakes.otlp import ByteCountingProxy, OtlpReceiver, free_port

    objs = kustomize(BASE)
    grace = one(objs, "DaemonSet")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    receiver = OtlpReceiver().start("grpc")
    proxy = ByteCountingProxy(receiver.port)  # gRPC hides the encoding from handlers: count wire bytes
    health_port = free_port()
    env = daemonset_env(fake_api_server) | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
        "OTEL_METRIC_EXPORT_INTERVAL": "2000",
        "KPOD_DISCOVERY_MODE": "local",
        "KPOD_HEALTH_PORT": str(health_port),
        "KPOD_HEALTH_ADDRESS": "127.0.0.1",
    }
    cmd = kpod_cmd(env, "run")
    launcher = subprocess.Popen([str(CHROOT_SH), "run", "--caps", ",".join(daemonset_caps()), "--", *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            first = receiver.wait_for(1, timeout=120)[0]
        except TimeoutError:
            launcher.kill()
            raise AssertionError("no export from the image's agent:\n" +
                                 (launcher.stdout.read() if launcher.stdout else "")[-3000:]) from None
        assert first.protocol == "grpc"
        resources = [resource_attrs(rm) for rm in first.request.resource_metrics]
        agent = next(r for r in resources if r.get("service.name") == "kpod-otel")
        assert agent["k8s.node.name"] == NODE_NAME
        assert len(resources) > 1, "no workload was measured"
        if health_wired():
            deadline = time.monotonic() + 30
            while http_status(health_port, "/readyz") != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert http_status(health_port, "/readyz") == 200
            assert http_status(health_port, "/healthz") == 200
        # Peak memory so far (start-up BPF compiles included) against the DaemonSet's limit.
        agent = next(p for p in descendants(launcher.pid)
                     if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[1].endswith(b"/kpod-otel"))
        status = Path(f"/proc/{agent}/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
        limit = quantity(agent_container(objs)["resources"]["limits"]["memory"])
        print(f"agent peak RSS {peak / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)")
        assert peak < limit
        before = len(receiver.received)
        t0 = time.monotonic()
        launcher.send_signal(signal.SIGTERM)  # chroot.sh passes it on, as a container runtime does
        rc = launcher.wait(timeout=grace)
        took = time.monotonic() - t0
        output = launcher.stdout.read() if launcher.stdout else ""
        assert rc == 0, output[-3000:]
        assert took < grace
        assert len(receiver.received) > before, "no final export after SIGTERM"
        # OTEL_EXPORTER_OTLP_COMPRESSION=gzip: fewer bytes on the wire than the serialized requests.
        serialized = sum(r.request.ByteSize() for r in receiver.received)
        assert proxy.client_bytes < serialized * 0.7, (proxy.client_bytes, serialized)
    finally:
        if launcher.poll() is None:
            for p in reversed([launcher.pid, *descendants(launcher.pid)]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            launcher.wait()
        proxy.close()
        receiver.stop()
