"""From collector snapshots to OTLP: per-target MeterProviders, histogram merging, exporters."""
