"""Collectors: one source of metrics each (BPF programs, cgroup file families)."""
