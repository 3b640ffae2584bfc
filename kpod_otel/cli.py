"""Command line: `kpod-otel run | snapshot | check | --version`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from kpod_otel import __version__
from kpod_otel.config import Config, ConfigError, load_config

EXIT_CONFIG = 2

log = logging.getLogger("kpod_otel")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kpod-otel", description="Per-pod kernel metrics, exported as OTLP.")
    p.add_argument("--version", action="version", version=f"kpod-otel {__version__}")
    p.add_argument("--log-level", default=os.environ.get("KPOD_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="collect every interval and export OTLP")
    run.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    run.add_argument("--once", action="store_true", help="one cycle, one export; exit 0 only if it succeeded")
    run.add_argument("--console", action="store_true",
                     help="print a table every cycle (exports too only when OTEL_EXPORTER_OTLP_*ENDPOINT is set)")

    snap = sub.add_parser("snapshot", help="collect once locally and print")
    snap.add_argument("--config", "-c")
    snap.add_argument("--format", choices=["table", "otlp-json"], default="table")
    snap.add_argument("--interval", type=float, default=1.0,
                      help="table format: seconds between the two reads that rates are computed from")

    chk = sub.add_parser("check", help="preflight checks of this node; non-zero exit on fatal problems")
    chk.add_argument("--config", "-c")
    return p


def _load(path: str | None) -> Config:
    return load_config(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = _load(args.config)
        if args.command == "run":
            return cmd_run(config, once=args.once, console=args.console)
        if args.command == "snapshot":
            return cmd_snapshot(config, args.format, args.interval)
        if args.command == "check":
            from kpod_otel.preflight import run_checks

            code: int = run_checks(config, sys.stdout)
            return code
    except ConfigError as exc:
        print(f"kpod-otel: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    raise AssertionError(args.command)


def cmd_run(config: Config, once: bool, console: bool) -> int:
    from kpod_otel.assembly import build_agent, export_disabled
    from kpod_otel.memory_trace import tracer_from_env

    tracer = tracer_from_env()
    if tracer is not None:
        tracer.start()
    if export_disabled():
        log.warning("OTEL_SDK_DISABLED=true: not collecting or exporting; waiting for SIGTERM")
        _wait_for_signal()
        return 0
    assembled = build_agent(config, console=console, export=not console or _endpoint_configured())
    agent = assembled.agent
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    assembled.start(stop=stop)
    if once:
        try:
            ok = agent.run_cycle()
        finally:
            agent.close()
            assembled.stop()
        return 0 if ok else 1
    try:
        return agent.run(stop)
    finally:
        assembled.stop()


def _endpoint_configured() -> bool:
    return any(os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def _boot_time_ns() -> int | None:
    from kpod_otel.procfs.parsers import parse_boot_time

    try:
        with open("/proc/stat") as f:
            return parse_boot_time(f.read())
    except OSError:
        return None


def cmd_snapshot(config: Config, fmt: str, interval: float) -> int:
    from kpod_otel.assembly import build_agent
    from kpod_otel.console import TableRenderer
    from kpod_otel.export.otlp_json import to_otlp_json

    # One read, no history: series whose creation is unknown start at the boot (a baseline would
    # show 0 for every counter).
    assembled = build_agent(config, console=False, export=False, unknown_origin_ns=_boot_time_ns())
    assembled.start(serve_health=False)
    try:
        pipeline, source = assembled.pipeline, assembled.source
        if fmt == "otlp-json":
            print(to_otlp_json(pipeline.collect(source.targets()).request))
            return 0
        renderer = TableRenderer(print)
        renderer.render(pipeline.collect(source.targets()), time.monotonic())
        time.sleep(max(0.0, interval))
        print(renderer.render(pipeline.collect(source.targets()), time.monotonic()))
        return 0
    finally:
        assembled.agent.close()
        assembled.stop()
