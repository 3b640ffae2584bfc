# Every target installs what it needs first (scripts/setup.sh is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup run snapshot check test test-fast lint bench clean image-proof

setup:
	scripts/setup.sh

DEMO ?= 1

## run the agent on this machine: a live per-workload table, no cluster and no collector needed.
## DEMO=1 (default) also starts a few demo workloads in their own cgroups (scripts/demo.sh), removed on exit.
run: setup
	@if [ "$(DEMO)" = 1 ]; then scripts/demo.sh start; trap 'scripts/demo.sh stop' EXIT INT TERM; fi; \
	$(PY) -m kpod_otel run --config examples/local.yaml --console $(ARGS)

snapshot: setup
	$(PY) -m kpod_otel snapshot --config examples/local.yaml $(ARGS)

check: setup
	$(PY) -m kpod_otel check --config examples/local.yaml

## all tests, plus lint and type checks
test: setup
	$(VENV)/bin/ruff check kpod_otel tests bench scripts
	$(VENV)/bin/mypy
	$(PY) -m pytest $(ARGS)

## the fast lane: no root, no BPF, nothing slow (tests marked root/bpf/slow are left out); runs as any
## user in well under a minute and needs only the virtualenv
FAST := not root and not bpf and not slow
test-fast:
	KPOD_VENV=$(VENV) scripts/setup.sh --venv-only
	$(PY) -m pytest -m "$(FAST)" $(ARGS)

bench: setup
	$(PY) bench/export_cycle.py

## prove the container image recipe without Docker: deploy/image/install.sh in a debootstrapped bookworm
## chroot (base cached in .cache/image; ~1 min from scratch), then the CLI inside it (docs/deploy.md)
image-proof: setup
	deploy/image/chroot.sh build
	deploy/image/chroot.sh run -- kpod-otel --version
	deploy/image/chroot.sh run -- env NODE_NAME=$$(hostname) KPOD_DISCOVERY_MODE=local \
		kpod-otel check --config /etc/kpod-otel/config.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
