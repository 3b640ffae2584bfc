"""Collectors: cgroup/procfs files (disk, interface network, filesystem, memory) and eBPF
(CPU, TCP, memory, syscalls)."""
