"""The host's cgroup filesystem: layout detection (v1/v2/hybrid), Kubernetes cgroup naming, parsers of
cgroup files, and the mapping of pods to their cgroups (PodCgroupMapper)."""
