"""Real kernel objects for the cgroup tests: Kubernetes-shaped cgroups in this machine's hierarchies.

They need a hybrid host (the kind this suite's CI runs on): v1 controllers under
/sys/fs/cgroup/<controller> and the cgroup2 hierarchy at /sys/fs/cgroup/unified; elsewhere they skip.
A test pod is created in every hierarchy the tests use, with a random UID, so that several engineers'
tests can share kubepods.slice; only the test's own cgroups are removed (and the shared parents only
when they are empty, which the kernel enforces: rmdir of a cgroup with children fails).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from tests.conftest import HOST, host_needs, host_needs_v1, require_root

CGROUP_ROOT = "/sys/fs/cgroup"
# the hierarchies a "pod" is created in; name=systemd is left alone (systemd's own tree)
HIERARCHIES = ("memory", "blkio", "cpu", "cpuacct", "pids", "unified")


def require_cgroups() -> None:
    """Root, and a hybrid host: the test pods live in the v1 controllers and the unified hierarchy. On a
    pure v2 or pure v1 host these tests are skipped (also under CI: another kind of host, not a missing
    privilege)."""
    require_root()
    host_needs_v1(*(h for h in HIERARCHIES if h != "unified"))
    host_needs(HOST.v2_dir == os.path.join(CGROUP_ROOT, "unified"), "needs the cgroup2 hierarchy at "
               f"{CGROUP_ROOT}/unified next to the v1 controllers (hybrid)")


def random_uid() -> str:
    return str(uuid.uuid4())


def random_container_id() -> str:
    return secrets.token_hex(32)


def join_cgroups_command(rel_paths: Sequence[str], hierarchies: Sequence[str] = HIERARCHIES) -> str:
    """Shell prefix that moves the shell into the cgroups before it execs the real command."""
    writes = [
        f"echo $$ > {os.path.join(CGROUP_ROOT, h, rel, 'cgroup.procs')}"
        for rel in rel_paths
        for h in hierarchies
    ]
    return " && ".join(writes)


@dataclass
class CgroupTree:
    """Relative cgroup paths created by a test, removed leaf-first; processes started in them."""

    created: list[str] = field(default_factory=list)  # relative paths, parents before children
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def make(self, rel: str, hierarchies: Sequence[str] = HIERARCHIES) -> str:
        parts = rel.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            for h in hierarchies:
                path = os.path.join(CGROUP_ROOT, h, sub)
                if not os.path.isdir(path):
                    with contextlib.suppress(FileExistsError):  # another test made it meanwhile
                        os.mkdir(path)
            if sub not in self.created:
                self.created.append(sub)
        return rel

    def spawn(self, rel: str, argv: Sequence[str], hierarchies: Sequence[str] = HIERARCHIES,
              **kwargs: object) -> subprocess.Popen[bytes]:
        """Start argv with every one of its threads in `rel` from its first instruction."""
        cgroup_files = [os.path.join(CGROUP_ROOT, h, rel, "cgroup.procs") for h in hierarchies]

        def join() -> None:
            for f in cgroup_files:
                with open(f, "w") as fh:
                    fh.write(str(os.getpid()))

        proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), preexec_fn=join, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def sleeper(self, rel: str, hierarchies: Sequence[str] = HIERARCHIES) -> subprocess.Popen[bytes]:
        return self.spawn(rel, ["sleep", "300"], hierarchies)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for rel in sorted(self.created, key=lambda r: r.count("/"), reverse=True):
            # a shared parent may hold other tests' children (EBUSY): tried once, never retried
            rmdir_cgroup(rel, attempts=1 if os.path.basename(rel) in SHARED_PARENTS else 50)


def rmdir_cgroup(rel: str, attempts: int = 50, pause: float = 0.05) -> bool:
    """Remove `rel` from every test hierarchy; retried while a killed process is still leaving it.
    True when it is gone everywhere."""
    gone = True
    for h in HIERARCHIES:
        path = os.path.join(CGROUP_ROOT, h, rel)
        for attempt in range(attempts):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                if attempt + 1 < attempts:
                    time.sleep(pause)
        gone = gone and not os.path.exists(path)
    return gone


# Parents that other engineers' tests create too: removed only when empty, never retried.
SHARED_PARENTS = frozenset({
    "kubepods.slice", "kubepods-burstable.slice", "kubepods-besteffort.slice", "kubepods",
    "burstable", "besteffort", "kubelet.slice", "kubelet-kubepods.slice", "kubelet",
    "kubelet-kubepods-burstable.slice", "kubelet-kubepods-besteffort.slice",
})


@pytest.fixture
def cgroup_tree() -> Iterator[CgroupTree]:
    require_cgroups()
    tree = CgroupTree()
    try:
        yield tree
    finally:
        tree.cleanup()


@dataclass(frozen=True)
class KubePod:
    uid: str
    pod_path: str
    container_id: str
    container_path: str
    sandbox_id: str
    sandbox_path: str


def systemd_burstable_pod(tree: CgroupTree) -> KubePod:
    """kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice with one containerd
    container scope and one sandbox scope, in every test hierarchy."""
    uid = random_uid()
    pod = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice"
    cid, sid = random_container_id(), random_container_id()
    tree.make(pod)
    cpath = tree.make(f"{pod}/cri-containerd-{cid}.scope")
    spath = tree.make(f"{pod}/cri-containerd-{sid}.scope")
    return KubePod(uid, pod, cid, cpath, sid, spath)


PYTHON = sys.executable
