// System calls per cgroup: calls, errors returned to user space, optionally the latency.
//
// raw_syscalls:sys_exit runs in the calling task, so bpf_get_current_cgroup_id() is its cgroup. This hook
// runs on every syscall of the node, so the counting path is one per-CPU map lookup. The latency
// histogram (KPOD_SYSCALL_LATENCY, comprehensive profile only) adds sys_enter and a shared histogram
// update; note that blocking calls (futex, epoll_wait, nanosleep...) measure idle time, not cost.
//
// Errors: a negative return, except the kernel-internal restart codes ERESTARTSYS (512), ERESTARTNOINTR,
// ERESTARTNOHAND, ENOIOCTLCMD, ERESTART_RESTARTBLOCK (516). sys_exit sees those when a signal interrupts
// a blocked call; the kernel then runs the handler and restarts the call, and user space never sees
// them. (For a handler without SA_RESTART the kernel turns ERESTARTSYS into EINTR after this hook: that
// EINTR is not counted as an error.) Every exit, restarts included, counts as a call.
#include "kpod.h"

#define KPOD_ERESTARTSYS 512
#define KPOD_ERESTART_RESTARTBLOCK 516

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
    struct syscall_counts zero = {};
    struct syscall_counts *c = syscalls.lookup_or_try_init(&cgroup_id, &zero);
    if (!c) {
        kpod_count_loss(KPOD_LOSS_SYSCALLS);
        return 0;
    }
    long ret = args->ret;
    c->calls++;  // per-CPU value: no atomics needed
    if (ret < 0 && (ret < -KPOD_ERESTART_RESTARTBLOCK || ret > -KPOD_ERESTARTSYS))
        c->errors++;
#ifdef KPOD_SYSCALL_LATENCY
    u32 tid = bpf_get_current_pid_tgid();
    u64 *since = entered_at.lookup(&tid);
    if (!since) {
        // Evicted from the LRU map, or in this call since before the program was loaded.
        kpod_count_loss(KPOD_LOSS_ENTERED_AT);
        return 0;
    }
    if (!*since)
        return 0;
    u64 ns = bpf_ktime_get_ns() - *since;
    *since = 0;
    struct kpod_hist zero_hist = {};
    struct kpod_hist *h = syscall_latency.lookup_or_try_init(&cgroup_id, &zero_hist);
    if (!h) {
        kpod_count_loss(KPOD_LOSS_SYSCALL_LATENCY);
        return 0;
    }
    kpod_hist_add(h, ns);
#endif
    return 0;
}
