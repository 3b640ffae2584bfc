// CPU scheduling per cgroup: run-queue latency and context switches, from classic tracepoints only
// (bcc builds their argument structs from tracefs, so no kernel struct layout is involved).
//
// Attribution: at sched_switch `current` is the task switched OUT (prev). Its context switch is charged to
// current's cgroup. The wait of the task switched IN (next) is known now, but next's cgroup is not (that
// would need task_struct); the wait is parked per CPU and committed at the next sched_switch on this CPU,
// where next has become current. A task waits from wakeup, wakeup_new, or being preempted while runnable.
#include "kpod.h"

#define MAP_CTX_SWITCHES 0
#define MAP_RUNQ_LATENCY 1
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
BPF_TABLE("lru_hash", u32, u64, enqueued_at, KPOD_MAX_TASKS);  // tid -> ns it became runnable
BPF_PERCPU_ARRAY(pending, struct pending_wait, 1);

// Timestamps are written in place when the task already has an entry (a map update would allocate a
// new element each time); 0 means "not waiting". Entries of exited tasks age out of the LRU map.
static __always_inline void mark_runnable(u32 pid, u64 now) {
    if (pid == 0)
        return;
    u64 *ts = enqueued_at.lookup(&pid);
    if (ts)
        *ts = now;
    else
        enqueued_at.update(&pid, &now);
}

TRACEPOINT_PROBE(sched, sched_wakeup) {
    mark_runnable(args->pid, bpf_ktime_get_ns());
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new) {
    mark_runnable(args->pid, bpf_ktime_get_ns());
    return 0;
}

static __always_inline void add_wait(u64 cgroup_id, u64 wait_ns) {
    struct kpod_hist *h = runq_latency.lookup(&cgroup_id);
    if (!h) {
        struct kpod_hist zero = {};
        kpod_count_failure(MAP_RUNQ_LATENCY, runq_latency.insert(&cgroup_id, &zero));
        h = runq_latency.lookup(&cgroup_id);
        if (!h)
            return;
    }
    unsigned int slot = kpod_slot(wait_ns);
    __sync_fetch_and_add(&h->slots[slot], 1);
    __sync_fetch_and_add(&h->sum, wait_ns);
    __sync_fetch_and_add(&h->count, 1);
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
        struct switch_counts *c = ctx_switches.lookup(&cgroup_id);
        if (!c) {
            struct switch_counts init = {};
            kpod_count_failure(MAP_CTX_SWITCHES, ctx_switches.insert(&cgroup_id, &init));
            c = ctx_switches.lookup(&cgroup_id);
        }
        if (c) {  // per-CPU value: no atomics needed
            if (runnable)
                c->involuntary++;
            else
                c->voluntary++;
        }
        if (runnable)  // preempted: waits again from now
            mark_runnable(prev, now);
    }
    p->valid = 0;
    if (next != 0) {
        u64 *since = enqueued_at.lookup(&next);
        if (since && *since) {
            p->wait_ns = now > *since ? now - *since : 0;
            p->pid = next;
            p->valid = 1;
            *since = 0;
        }
    }
    return 0;
}

// A removed cgroup's entries are deleted by user space after one more read (see kpod.h).
TRACEPOINT_PROBE(cgroup, cgroup_rmdir) {
    if (args->root != KPOD_V2_HIERARCHY)
        return 0;
    kpod_note_removed(args->id);
    return 0;
}
