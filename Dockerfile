# kpod-otel agent image. Every install step is in deploy/image/install.sh, which is also run (and its
# result tested) in a debootstrapped bookworm chroot by deploy/image/chroot.sh on machines without Docker.
#
#   docker build -t kpod-otel:0.1.0 .
#
# Debian's Python 3.11 (not a python:* image) because bcc's Python bindings (python3-bpfcc) are built
# for it. The source is bind-mounted for the build only (BuildKit, the default builder since Docker 23),
# so it never lands in a layer.
FROM debian:bookworm-slim

RUN --mount=type=bind,source=.,target=/src \
    /bin/sh /src/deploy/image/install.sh /src

ENV PATH=/opt/kpod-otel/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Runs as root: it reads every pod's /proc and cgroup files and loads BPF programs. The DaemonSet keeps
# only the capabilities that needs (deploy/base/daemonset.yaml) and a read-only root filesystem.
ENTRYPOINT ["kpod-otel"]
CMD ["run", "--config", "/etc/kpod-otel/config.yaml"]
