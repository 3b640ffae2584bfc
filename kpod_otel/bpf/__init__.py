"""eBPF with bcc: loading the programs of `ebpf/` and reading their per-cgroup maps.

`support` says whether eBPF can run on this node (the agent and `kpod-otel check` ask the same functions),
`program` loads one program, `collector` is the common part of the eBPF collectors (which live in
`kpod_otel.collectors`); the assembly decides which of them run.
"""
