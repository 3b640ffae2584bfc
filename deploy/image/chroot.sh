#!/usr/bin/env bash
# Proves the image recipe without Docker: a debootstrapped Debian bookworm root (what debian:bookworm-slim
# is built from) gets deploy/image/install.sh run inside it, exactly as the Dockerfile runs it, and the
# result can then run commands with the DaemonSet's host mounts.
#
# Usage (as root):
#   deploy/image/chroot.sh build
#       Debootstrap a minbase bookworm root once (cached), copy it to a fresh work root and run
#       install.sh inside it (chroot, with /proc, /sys, /dev bound and the checkout bound read-only at /src).
#   deploy/image/chroot.sh run [--no-headers] [--caps CAP,CAP,...] -- CMD [ARG...]
#       Run CMD in the built root, in a clean environment (PATH, HOME, LANG; add more with `env K=V`),
#       with the DaemonSet's mounts: host /proc at /host/proc, host /sys at /host/sys (cgroupfs under it),
#       /sys (tracefs, btf) at /sys, /lib/modules and /usr/src read-only (unless --no-headers).
#       --caps keeps only those capabilities (names as in Kubernetes: BPF, PERFMON, SYS_ADMIN, ...).
#   deploy/image/chroot.sh clean        remove the work root (the debootstrap cache stays)
#
# Every mount is made inside a private mount namespace (unshare) and also unmounted explicitly before
# the command returns, so nothing is left mounted on the host whatever happens.
#
# Environment: KPOD_IMAGE_CACHE (default <repo>/.cache/image) holds the cached base and the work root;
# KPOD_DEBIAN_MIRROR overrides the mirror, which is otherwise read from this machine's apt sources.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KPOD_IMAGE_CACHE:-$REPO/.cache/image}
SUITE=bookworm
BASE=$CACHE/base-$SUITE
ROOT=$CACHE/root

log() { printf 'chroot.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"

# The Debian mirror this machine already uses: first source serving "$SUITE" with component main
# (deb822 .sources files and one-line .list files).
debian_mirror() {
  if [ -n "${KPOD_DEBIAN_MIRROR:-}" ]; then echo "$KPOD_DEBIAN_MIRROR"; return; fi
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() { if (uri != "" && suites ~ ("(^| )" suite "( |$)") && comps ~ /(^| )main( |$)/) { print uri; exit } uri=""; suites=""; comps="" }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { uri=$2 } /^Suites:/ { $1=""; suites=$0 } /^Components:/ { $1=""; comps=$0 }
      END { flush() }' "$f"
  done
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    awk -v suite="$SUITE" '$1 == "deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i+1) == suite) { for (j=i+2; j<=NF; j++) if ($j == "main") { print $i; exit } } }'
}

# Run "$@" in a private mount namespace: mounts made there never reach the host's mount table.
in_private_ns() { unshare --mount --propagation private "$@"; }

ensure_base() {
  if [ -f "$BASE/.complete" ]; then
    log "using cached debootstrap root $BASE"
    return
  fi
  local mirror
  mirror=$(debian_mirror | head -n1 || true)
  [ -n "$mirror" ] || die "no Debian mirror for $SUITE found in /etc/apt/sources.list*; set KPOD_DEBIAN_MIRROR"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/setup.sh installs it)"
  remove_tree "$BASE.tmp"
  mkdir -p "$BASE.tmp"
  touch "$BASE.tmp/$MARKER"
  log "debootstrap --variant=minbase $SUITE (from this machine's mirror)"
  local t0=$SECONDS
  in_private_ns debootstrap --variant=minbase "$SUITE" "$BASE.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  remove_tree "$BASE"
  mv "$BASE.tmp" "$BASE"
  touch "$BASE/.complete"
  log "timing: debootstrap $((SECONDS - t0)) s"
}

# Mount helpers used inside the private namespace (see mounted_cmd). Each mount is recorded so the exit
# trap can unmount in reverse order.
MOUNTS=()
bind_rec() { mkdir -p "$2"; mount --rbind "$1" "$2"; mount --make-rslave "$2"; MOUNTS+=("$2"); }
bind_ro() {
  [ -e "$2" ] || mkdir -p "$2"; mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; MOUNTS+=("$2")
}
unmount_all() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -R "${MOUNTS[i]}" 2>/dev/null || umount -lR "${MOUNTS[i]}" || true; done
  MOUNTS=()
}

# The in-namespace part of `build` and `run` (re-executed by in_private_ns; args: MODE [options] -- CMD).
mounted_cmd() {
  local mode=$1; shift
  local headers=1 caps=""
  while [ $# -gt 0 ]; do
    case $1 in
      --no-headers) headers=0; shift ;;
      --caps) caps=$2; shift 2 ;;
      --) shift; break ;;
      *) die "unknown option $1" ;;
    esac
  done
  trap unmount_all EXIT
  bind_rec /proc "$ROOT/proc"
  bind_rec /sys "$ROOT/sys"
  bind_rec /dev "$ROOT/dev"
  local envv=(env -i PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root LANG=C.UTF-8)
  if [ "$mode" = build ]; then
    bind_ro "$REPO" "$ROOT/src"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"  # as `docker build` provides one
    # Where this machine reaches PyPI through a TLS proxy with its own CA, pip in the root needs that CA
    # (with Docker: `docker build --secret`); the image itself is not changed by it.
    local ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    if [ -f "$ca" ]; then
      touch "$ROOT/run/host-ca.crt"
      bind_ro "$ca" "$ROOT/run/host-ca.crt"
      envv+=(PIP_CERT=/run/host-ca.crt)
    fi
    chroot "$ROOT" "${envv[@]}" /bin/sh /src/deploy/image/install.sh /src
    return
  fi
  # What every container runtime provides: name resolution files (bind-mounted, read-only).
  local f
  for f in /etc/hosts /etc/resolv.conf; do
    [ -e "$ROOT$f" ] || touch "$ROOT$f"
    bind_ro "$f" "$ROOT$f"
  done
  # The DaemonSet's host mounts (deploy/base/daemonset.yaml).
  bind_rec /proc "$ROOT/host/proc"
  bind_rec /sys "$ROOT/host/sys"
  if [ "$headers" = 1 ]; then
    bind_ro /lib/modules "$ROOT/lib/modules"
    bind_ro /usr/src "$ROOT/usr/src"
  fi
  local prefix=()
  if [ -n "$caps" ]; then
    # Root keeps only the listed capabilities, as under the DaemonSet's securityContext.capabilities.
    local bset="-all" c
    IFS=, read -ra list <<<"$caps"
    for c in "${list[@]}"; do bset+=",+${c,,}"; done
    prefix=(setpriv --bounding-set="$bset" --inh-caps=-all --)
  fi
  # Like a container runtime stopping a container: SIGTERM/SIGINT to this script go to the command, and
  # the mounts stay until it has exited.
  chroot "$ROOT" "${envv[@]}" "${prefix[@]}" "$@" &
  local child=$! rc=0
  trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
  while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  return "$rc"
}

# Removes a tree this script made (it carries the marker file), never anything else.
MARKER=.kpod-image-tree
remove_tree() {
  [ -e "$1" ] || return 0
  [ -f "$1/$MARKER" ] || die "$1 exists but was not made by chroot.sh (no $MARKER); not removing it"
  refuse_if_mounted "$1"
  rm -rf "$1"
}

# rm -rf of a tree with a host mount inside would delete the host's files: refuse instead.
refuse_if_mounted() {
  local d
  d=$(realpath -m "$1")
  if awk -v d="$d" '$5 == d || index($5, d "/") == 1 { found=1 } END { exit !found }' /proc/self/mountinfo; then
    die "something is still mounted under $d; not removing it"
  fi
}

cmd=${1:-}
case $cmd in
  build)
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    ensure_base
    t0=$SECONDS
    remove_tree "$ROOT"
    cp -a "$BASE" "$ROOT"
    touch "$ROOT/$MARKER"
    rm -f "$ROOT/.complete"
    log "running deploy/image/install.sh in the chroot"
    in_private_ns "$0" __mounted build
    rm -f "$ROOT/etc/resolv.conf" "$ROOT/run/host-ca.crt"
    touch "$ROOT/.built"
    log "timing: install.sh $((SECONDS - t0)) s"
    ;;
  run)
    shift
    [ -f "$ROOT/.built" ] || die "no built root at $ROOT: run '$0 build' first"
    exec unshare --mount --propagation private "$0" __mounted run "$@"
    ;;
  __mounted)
    shift
    mounted_cmd "$@"
    ;;
  clean)
    remove_tree "$ROOT"
    ;;
  *)
    die "usage: $0 build | run [--no-headers] [--caps CAPS] -- CMD... | clean"
    ;;
esac
