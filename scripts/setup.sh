#!/usr/bin/env bash
# Idempotent set-up of this machine for running and testing kpod-otel (Debian 12, as root):
# system packages, kernel-header stand-ins for bcc, tracefs, and the project's virtualenv.
# Usage: scripts/setup.sh [--system-only|--venv-only]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KPOD_VENV:-.venv}
PY=${KPOD_PYTHON:-/usr/bin/python3}

APT_PACKAGES=(
  python3-bpfcc bpftool bpftrace       # bcc (libbcc + python bindings), map/prog inspection, oracle
  linux-headers-amd64                  # stand-in headers when the running kernel ships none
  python3-venv                         # venv of the machine's Python 3.11, which bcc is built for
  iproute2 nftables ethtool            # netns/veth tests, induced packet loss, GSO/TSO off
  strace                               # the least-privilege audit (no writes under /sys, /proc)
  debootstrap                          # proving the image recipe without Docker
  prometheus                           # promtool for the collector-config checks
)

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "system set-up needs root (apt-get, mounts); run as root or with sudo"; exit 1
  fi
}

system_setup() {
  need_root
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  # bcc compiles against /lib/modules/$(uname -r)/build. When the running kernel ships no headers,
  # Debian's generic headers are a usable stand-in for programs that only use stable UAPI and
  # tracepoint formats (which bcc reads from tracefs, not from headers).
  local kdir=/lib/modules/$(uname -r)
  if [ ! -e "$kdir/build/include" ]; then
    local hdr common
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
    if [ -n "$hdr" ] && [ -n "$common" ]; then
      log "kernel $(uname -r) has no headers: linking $hdr as a stand-in"
      mkdir -p "$kdir"
      ln -sfn "$hdr" "$kdir/build"
      ln -sfn "$common" "$kdir/source"
    else
      log "no kernel headers found; eBPF collectors will be unavailable"
    fi
  fi

  # kubectl (kustomize built in) comes with this machine class's image; Debian's kubernetes-client (1.20)
  # is too old for the deploy tests and conflicts with it.
  command -v kubectl >/dev/null || log "kubectl not found: the deploy manifest tests need it"

  if [ ! -e /sys/kernel/tracing/events ]; then
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs"
  fi
}

venv_setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.kpod-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e '.[dev]'
    touch "$stamp"
  fi
  # bcc is not on PyPI (the PyPI "bcc" is unrelated): expose Debian's pure-Python package, and only it.
  local site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if [ -d /usr/lib/python3/dist-packages/bcc ]; then
    ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
  fi
}

case "${1:-}" in
  --system-only) system_setup ;;
  --venv-only) venv_setup ;;
  *) system_setup; venv_setup ;;
esac
