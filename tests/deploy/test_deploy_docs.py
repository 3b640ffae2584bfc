"""docs/deploy.md's deploy commands: the manifest pipeline runs as written (with `cat` for the cluster)."""

from __future__ import annotations

import re
import subprocess

import yaml

import kpod_otel
from tests.deploy.deploy_manifests import OVERLAY, REPO, kustomize

DOC = REPO / "docs" / "deploy.md"


def deploy_commands() -> list[str]:
    text = DOC.read_text()
    block = re.search(r"<!-- deploy-commands .*?-->\n```sh\n(.*?)```\n<!-- /deploy-commands -->", text, re.S)
    assert block, "the deploy-commands block is missing from docs/deploy.md"
    return [ln.split("  #", 1)[0].strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_three_commands_after_setting_the_image() -> None:
    lines = deploy_commands()
    assert lines[0].startswith("IMAGE=")
    assert len(lines[1:]) == 3
    assert lines[1].startswith("docker build -t \"$IMAGE\" .")
    assert lines[3] == "kubectl -n kpod-otel rollout status daemonset/kpod-otel"


def test_apply_pipeline_sends_the_overlay_with_the_pushed_image() -> None:
    lines = deploy_commands()
    apply = lines[2]
    assert apply.endswith("| kubectl apply -f -")
    pipeline = apply.removesuffix("| kubectl apply -f -") + "| cat"
    image = "registry.example.com/team/kpod-otel:" + kpod_otel.__version__
    out = subprocess.run(["bash", "-c", pipeline], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "IMAGE": image}, check=True)
    sent = [d for d in yaml.safe_load_all(out.stdout) if d]
    expected = kustomize(OVERLAY)
    assert [(d["kind"], d["metadata"]["name"]) for d in sent] == [
        (d["kind"], d["metadata"]["name"]) for d in expected
    ]
    images = [c["image"] for d in sent if d["kind"] in ("DaemonSet", "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert image in images
    assert not any(i.startswith("kpod-otel:") for i in images)  # the sed pattern still matches the build


def test_readme_shows_the_same_commands() -> None:
    readme = (REPO / "README.md").read_text()
    for line in deploy_commands():
        assert line in readme, line
