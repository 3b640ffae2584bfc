"""kpod-otel: per-pod kernel metrics for Kubernetes nodes, exported as OTLP."""

__version__ = "0.1.0"
