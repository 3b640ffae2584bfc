// CPU scheduling per cgroup: run-queue latency and context switches, from classic tracepoints only
// (bcc builds their argument structs from tracefs, so no kernel struct layout is involved).
//
// Attribution: at sched_switch `current` is the task switched OUT (prev). Its context switch is charged to
// current's cgroup. The wait of the task switched IN (next) is known now, but next's cgroup is not (that
// would need task_struct); the wait is parked per CPU and committed at the next sched_switch on this CPU,
// where next has become current.
//
// A wait starts when the task becomes runnable and ends when it is switched in. The mark (enqueued_at):
//  - preempted (switched out while runnable): set to now; it is on the run queue from now on, and any
//    mark left by a wakeup while it was running is meaningless.
//  - sched_wakeup / sched_wakeup_new: set only when no wait is pending. sched_wakeup also fires for a
//    task that is still queued (preempted in its sleep window, then woken): its wait began at the
//    preemption and must not restart.
//  - voluntary switch-out (blocked): cleared. A wakeup of a still-running task leaves a mark behind; if
//    the task then blocks and its next wakeup's run is skipped (recursion protection), a stale mark
//    would turn the whole sleep into a "wait". Cleared, that wait is simply not measured (and the skip
//    is counted in the program's recursion_misses).
//  - switched in: consumed and cleared.
#include "kpod.h"

// prev_state & 0xff == 0: prev is still runnable (preempted shows as TASK_REPORT_MAX 0x100, "R+")
#define KPOD_STATE_MASK 0xff

struct switch_counts {
    u64 voluntary;    // prev blocked
    u64 involuntary;  // prev preempted while runnable
};

struct pending_wait {
    u64 wait_ns;
    u32 pid;    // the task switched in; committed only if it is the one switched out next
    u32 valid;
};

BPF_PERCPU_HASH(ctx_switches, u64, struct switch_counts, KPOD_MAX_CGROUPS);
BPF_HASH(runq_latency, u64, struct kpod_hist, KPOD_MAX_CGROUPS);
BPF_TABLE("lru_hash", u32, u64, enqueued_at, KPOD_MAX_TASKS);  // tid -> ns it became runnable, 0: none
BPF_PERCPU_ARRAY(pending, struct pending_wait, 1);

// Timestamps are written in place when the task already has an entry (a map update would allocate a
// new element each time). Entries of exited tasks age out of the LRU map.
static __always_inline void mark_runnable(u32 pid, u64 now, int only_if_none) {
    u64 *ts = enqueued_at.lookup(&pid);
    if (!ts)
        enqueued_at.update(&pid, &now);
    else if (!only_if_none || *ts == 0)
        *ts = now;
}

TRACEPOINT_PROBE(sched, sched_wakeup) {
    if (args->pid)
        mark_runnable(args->pid, bpf_ktime_get_ns(), 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new) {
    if (args->pid)
        mark_runnable(args->pid, bpf_ktime_get_ns(), 1);
    return 0;
}

static __always_inline void add_wait(u64 cgroup_id, u64 wait_ns) {
    struct kpod_hist zero = {};
    struct kpod_hist *h = runq_latency.lookup_or_try_init(&cgroup_id, &zero);
    if (!h) {
        kpod_count_loss(KPOD_LOSS_RUNQ_LATENCY);
        return;
    }
    kpod_hist_add(h, wait_ns);
}

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    u32 prev = args->prev_pid;
    u32 next = args->next_pid;
    int zero = 0;
    struct pending_wait *p = pending.lookup(&zero);
    if (!p)
        return 0;
    if (prev != 0) {  // the idle task is no workload
        u64 cgroup_id = bpf_get_current_cgroup_id();  // current == prev
        if (p->valid && p->pid == prev)
            add_wait(cgroup_id, p->wait_ns);
        int runnable = (args->prev_state & KPOD_STATE_MASK) == 0;
        struct switch_counts init = {};
        struct switch_counts *c = ctx_switches.lookup_or_try_init(&cgroup_id, &init);
        if (!c)
            kpod_count_loss(KPOD_LOSS_CTX_SWITCHES);
        else if (runnable)  // per-CPU value: no atomics needed
            c->involuntary++;
        else
            c->voluntary++;
        if (runnable) {
            mark_runnable(prev, now, 0);  // preempted: waits from now
        } else {
            u64 *ts = enqueued_at.lookup(&prev);  // blocked: no wait pending any more
            if (ts)
                *ts = 0;
        }
    }
    p->valid = 0;
    if (next != 0) {
        u64 *since = enqueued_at.lookup(&next);
        if (!since) {
            // Evicted from the LRU map, or runnable since before the program was loaded.
            kpod_count_loss(KPOD_LOSS_ENQUEUED_AT);
        } else if (*since) {
            p->wait_ns = now > *since ? now - *since : 0;
            p->pid = next;
            p->valid = 1;
            *since = 0;
        }
    }
    return 0;
}
