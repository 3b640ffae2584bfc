// Memory per cgroup: OOM kills charged to the victim, major page faults charged to the faulting task.
//
// oom:mark_victim runs in the context of the task that triggered the OOM killer, not of the victim, so
// the victim's pid is remembered and counted when that task exits (sched:sched_process_exit runs in the
// exiting task, so bpf_get_current_cgroup_id() is the victim's cgroup). Major faults come from the perf
// software event PAGE_FAULTS_MAJ with sample_period=1: it fires in the faulting task for every fault.
#include "kpod.h"

#define MAP_OOM_KILLS 0
#define MAP_MAJOR_FAULTS 1
#define MAP_OOM_VICTIMS 2

BPF_HASH(oom_victims, u32, u32, 1024);  // pid marked by the OOM killer -> 1
BPF_HASH(oom_kills, u64, u64, KPOD_MAX_CGROUPS);
BPF_PERCPU_HASH(major_faults, u64, u64, KPOD_MAX_CGROUPS);

TRACEPOINT_PROBE(oom, mark_victim) {
    u32 pid = args->pid;
    u32 one = 1;
    kpod_count_failure(MAP_OOM_VICTIMS, oom_victims.update(&pid, &one));
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u32 pid = args->pid;
    if (!oom_victims.lookup(&pid))
        return 0;
    oom_victims.delete(&pid);
    u64 cgroup_id = bpf_get_current_cgroup_id();  // current is the victim
    u64 *n = oom_kills.lookup(&cgroup_id);
    if (!n) {
        u64 zero = 0;
        kpod_count_failure(MAP_OOM_KILLS, oom_kills.insert(&cgroup_id, &zero));
        n = oom_kills.lookup(&cgroup_id);
        if (!n)
            return 0;
    }
    __sync_fetch_and_add(n, 1);
    return 0;
}

int kpod_major_fault(void *ctx) {
    u64 cgroup_id = bpf_get_current_cgroup_id();  // the faulting task
    u64 *n = major_faults.lookup(&cgroup_id);
    if (!n) {
        u64 zero = 0;
        int err = major_faults.insert(&cgroup_id, &zero);
        kpod_count_failure(MAP_MAJOR_FAULTS, err);
        n = major_faults.lookup(&cgroup_id);
        if (!n)
            return 0;
    }
    *n += 1;  // per-CPU value: no atomics needed
    return 0;
}

// A removed cgroup's entries are deleted by user space after one more read (see kpod.h).
TRACEPOINT_PROBE(cgroup, cgroup_rmdir) {
    if (args->root != KPOD_V2_HIERARCHY)
        return 0;
    kpod_note_removed(args->id);
    return 0;
}
