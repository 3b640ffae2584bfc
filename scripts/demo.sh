#!/usr/bin/env bash
# Demo workloads for `make run` on a machine without Kubernetes: a CPU burner pair contending for one CPU,
# an HTTP server and a client talking over loopback, and a page-fault reader, each in its own cgroup, so
# the agent's table has per-workload numbers to show. `start` prints nothing else; `stop` removes it all.
# With systemd they are transient units (systemd-run); without, top-level cgroups in every hierarchy.
set -euo pipefail
ROOT=${CGROUP_ROOT:-/sys/fs/cgroup}
STATE=${KPOD_DEMO_STATE:-/run/kpod-demo}
PY=${PYTHON:-python3}
NAMES=(kpod-demo-cpu kpod-demo-web kpod-demo-client kpod-demo-faults)

have_systemd() { [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; }

hierarchies() {  # every cgroup hierarchy directory a process must join (v1 controllers and/or v2)
  if [ -f "$ROOT/cgroup.controllers" ]; then echo "$ROOT"; return; fi
  for d in "$ROOT"/*/; do
    d=${d%/}
    [ -f "$d/cgroup.procs" ] && echo "$d"
  done
}

workload_cmd() {
  case $1 in
    kpod-demo-cpu) echo "taskset -c 0 sh -c 'while :; do :; done' & taskset -c 0 sh -c 'while :; do :; done' & wait" ;;
    kpod-demo-web) echo "exec $PY -m http.server --bind 127.0.0.1 18080 --directory /usr/share/doc" ;;
    kpod-demo-client) echo "while :; do $PY -c 'import urllib.request as u; [u.urlopen(\"http://127.0.0.1:18080/\").read() for _ in range(20)]' 2>/dev/null; sleep 0.2; done" ;;
    kpod-demo-faults) echo "while :; do echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; cat /usr/lib/x86_64-linux-gnu/*.so* >/dev/null 2>&1; sleep 1; done" ;;
  esac
}

start() {
  mkdir -p "$STATE"
  for name in "${NAMES[@]}"; do
    cmd=$(workload_cmd "$name")
    if have_systemd; then
      systemd-run --quiet --unit "$name" --collect sh -c "$cmd"
    else
      for h in $(hierarchies); do mkdir -p "$h/$name"; done
      # join every hierarchy first, then exec the workload: all its processes start inside
      joins=""
      for h in $(hierarchies); do joins="$joins echo \$\$ > $h/$name/cgroup.procs;"; done
      setsid sh -c "$joins $cmd" >/dev/null 2>&1 &
      echo $! > "$STATE/$name.pid"
    fi
  done
}

stop() {
  for name in "${NAMES[@]}"; do
    if have_systemd; then
      systemctl stop "$name" 2>/dev/null || true
      continue
    fi
    for h in $(hierarchies); do
      if [ -f "$h/$name/cgroup.procs" ]; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do
          pids=$(cat "$h/$name/cgroup.procs")
          [ -z "$pids" ] && break
          kill -9 $pids 2>/dev/null || true
          sleep 0.1
        done
      fi
    done
    for h in $(hierarchies); do rmdir "$h/$name" 2>/dev/null || true; done
    rm -f "$STATE/$name.pid"
  done
}

case "${1:-}" in
  start) stop; start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
