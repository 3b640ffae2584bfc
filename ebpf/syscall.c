// System calls per cgroup: completed calls and errors (return value < 0), optionally the latency.
//
// raw_syscalls:sys_exit runs in the calling task, so bpf_get_current_cgroup_id() is its cgroup. This hook
// runs on every syscall of the node, so the counting path is one per-CPU map lookup. The latency
// histogram (KPOD_SYSCALL_LATENCY, comprehensive profile only) adds sys_enter and a shared histogram
// update; note that blocking calls (futex, epoll_wait, nanosleep...) measure idle time, not cost.
#include "kpod.h"

#define MAP_SYSCALLS 0
#define MAP_SYSCALL_LATENCY 1

struct syscall_counts {
    u64 calls;
    u64 errors;
};

BPF_PERCPU_HASH(syscalls, u64, struct syscall_counts, KPOD_MAX_CGROUPS);

#ifdef KPOD_SYSCALL_LATENCY
BPF_TABLE("lru_hash", u32, u64, entered_at, KPOD_MAX_TASKS);  // tid -> ns of sys_enter
BPF_HASH(syscall_latency, u64, struct kpod_hist, KPOD_MAX_CGROUPS);

// The timestamp is written in place once the thread has an entry (an update per syscall would
// allocate a map element each time); 0 means "not in a syscall". Exited threads age out of the LRU map.
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    u32 tid = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    u64 *ts = entered_at.lookup(&tid);
    if (ts)
        *ts = now;
    else
        entered_at.update(&tid, &now);
    return 0;
}
#endif

TRACEPOINT_PROBE(raw_syscalls, sys_exit) {
    u64 cgroup_id = bpf_get_current_cgroup_id();
    struct syscall_counts *c = syscalls.lookup(&cgroup_id);
    if (!c) {
        struct syscall_counts zero = {};
        kpod_count_failure(MAP_SYSCALLS, syscalls.insert(&cgroup_id, &zero));
        c = syscalls.lookup(&cgroup_id);
        if (!c)
            return 0;
    }
    c->calls++;  // per-CPU value: no atomics needed
    if (args->ret < 0)
        c->errors++;
#ifdef KPOD_SYSCALL_LATENCY
    u32 tid = bpf_get_current_pid_tgid();
    u64 *since = entered_at.lookup(&tid);
    if (!since || !*since)
        return 0;
    u64 ns = bpf_ktime_get_ns() - *since;
    *since = 0;
    struct kpod_hist *h = syscall_latency.lookup(&cgroup_id);
    if (!h) {
        struct kpod_hist zero_hist = {};
        kpod_count_failure(MAP_SYSCALL_LATENCY, syscall_latency.insert(&cgroup_id, &zero_hist));
        h = syscall_latency.lookup(&cgroup_id);
        if (!h)
            return 0;
    }
    __sync_fetch_and_add(&h->slots[kpod_slot(ns)], 1);
    __sync_fetch_and_add(&h->sum, ns);
    __sync_fetch_and_add(&h->count, 1);
#endif
    return 0;
}

// A removed cgroup's entries are deleted by user space after one more read (see kpod.h).
TRACEPOINT_PROBE(cgroup, cgroup_rmdir) {
    if (args->root != KPOD_V2_HIERARCHY)
        return 0;
    kpod_note_removed(args->id);
    return 0;
}
