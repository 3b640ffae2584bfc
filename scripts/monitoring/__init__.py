"""Monitoring assets generated from the metric catalog: the Grafana dashboard and the Prometheus rules.

`python -m scripts.monitoring` rewrites them under deploy/components/monitoring/; `--check` fails when the
committed files differ from what the catalog gives (tests/deploy/test_monitoring.py runs the same check).
A panel or rule is emitted only when every metric it names is in the catalog.
"""
