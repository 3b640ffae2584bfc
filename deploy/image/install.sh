#!/bin/sh
# Every install step of the kpod-otel container image, in one place, so that the very same steps run in
# the Dockerfile and in the chroot proof (deploy/image/prove-chroot.sh) on machines without Docker.
#
# Usage: install.sh SRC_DIR
#   SRC_DIR: the project checkout (read-only is fine: the build works on a copy).
# Runs as root on Debian bookworm (the image's base is debian:bookworm-slim).
#
# Result:
#   /opt/kpod-otel            virtualenv of Debian's Python 3.11 with kpod-otel and its dependencies
#   /usr/local/bin/kpod-otel  the CLI (console script of the package)
#   /app/bpf                  the BPF C programs (bpf.program-dir), compiled by bcc at start-up
#   /etc/kpod-otel/config.yaml the default agent config (the same file as the kustomize base's ConfigMap)
set -eu

SRC=${1:?usage: install.sh SRC_DIR}
VENV=/opt/kpod-otel
BPF_DIR=/app/bpf
export DEBIAN_FRONTEND=noninteractive
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf 'install.sh: %s\n' "$*" >&2; }

# System packages. python3-bpfcc is bcc (libbcc with its embedded clang/LLVM, compiling the BPF programs
# at run time) plus its Python bindings, built for Debian's python3 (3.11): that is why the image uses
# Debian's Python and not a python:3.x image. bcc is not on PyPI (PyPI's "bcc" is an unrelated package).
# ca-certificates: pip fetches the Python dependencies over HTTPS.
log "apt packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  python3 python3-venv python3-bpfcc ca-certificates >/dev/null

# The package, built from a private copy of only what the wheel needs (the source may be a read-only mount).
log "python package"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r "$SRC/pyproject.toml" "$SRC/kpod_otel" "$build/"
cp "$SRC/README.md" "$build/" 2>/dev/null || : >"$build/README.md"
[ -d "$SRC/ebpf" ] && cp -r "$SRC/ebpf" "$build/"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "$build"

# Only Debian's bcc package goes on the venv's path (not all of dist-packages, which would shadow the
# pinned dependencies with Debian's older copies).
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
ln -sfn "$VENV/bin/kpod-otel" /usr/local/bin/kpod-otel

log "bpf programs and default config"
mkdir -p "$BPF_DIR" /etc/kpod-otel
if [ -d "$SRC/ebpf" ]; then
  cp -r "$SRC/ebpf/." "$BPF_DIR/"
fi
install -m 0644 "$SRC/deploy/base/kpod-otel.yaml" /etc/kpod-otel/config.yaml

# Nothing of the build stays in the image.
log "clean up"
apt-get clean
rm -rf /var/lib/apt/lists/* /root/.cache
log "done"
