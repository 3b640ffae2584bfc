"""python -m scripts.monitoring [--check] [--runbook-base URL]: write (or check) the generated files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from kpod_otel.catalog import METRICS, MetricDef
from scripts.monitoring.dashboard import dashboard
from scripts.monitoring.names import Names
from scripts.monitoring.rules import RUNBOOKS, rule_groups

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "deploy" / "components" / "monitoring"
DASHBOARD_FILE = "kpod-otel-dashboard.json"
RULES_FILE = "kpod-otel-rules.yaml"
PROMETHEUS_RULE_FILE = "prometheusrule.yaml"
NAMESPACE = "kpod-otel"  # the base's; an overlay's `namespace:` overrides it
HEADER = "# Generated from kpod_otel/catalog.py by `python -m scripts.monitoring`; do not edit by hand.\n"


def _yaml(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=200, allow_unicode=True)


def render(catalog: Iterable[MetricDef] = METRICS, runbook_base: str = RUNBOOKS) -> dict[str, str]:
    """The generated files, by name, for a catalog."""
    metrics = tuple(catalog)
    groups = rule_groups(Names(metrics), runbook_base)
    prometheus_rule = {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": "kpod-otel", "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": "kpod-otel"}},
        "spec": {"groups": groups},
    }
    return {
        DASHBOARD_FILE: json.dumps(dashboard(Names(metrics)), indent=1) + "\n",
        RULES_FILE: HEADER + "# A Prometheus rule file (rule_files:); prometheusrule.yaml has the same groups.\n"
        + _yaml({"groups": groups}),
        PROMETHEUS_RULE_FILE: HEADER + _yaml(prometheus_rule),
    }


def stale_files(out: Path = OUT) -> list[str]:
    """Generated files whose committed content differs from what the catalog gives."""
    return [name for name, text in render().items()
            if not (out / name).is_file() or (out / name).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.monitoring", description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed files are not current")
    ap.add_argument("--runbook-base", default=RUNBOOKS,
                    help="URL of docs/runbooks.md as your users reach it (alerts' runbook_url)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"{args.out / name} is not current: run python -m scripts.monitoring", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render(runbook_base=args.runbook_base).items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
