// OOM kills per cgroup, charged to the victim.
//
// The OOM killer (__oom_kill_process) sends the victim SIGKILL and then marks it (oom:mark_victim), both
// in the context of the task that triggered the OOM killer, and counts the kill in the memory cgroup's
// oom_kill. oom:mark_victim alone also fires without a kill: for a task that is already exiting (it is
// only given access to reserves so that it can exit). So a mark counts only when this same task has just
// sent SIGKILL from the kernel (signal:signal_generate, SI_KERNEL) to that pid: exactly the kills the
// memory cgroup counts. The victim's pid is remembered and counted when it exits
// (sched:sched_process_exit runs in the exiting task, so bpf_get_current_cgroup_id() is its cgroup).
#include "kpod.h"

#define KPOD_SIGKILL 9
#define KPOD_SI_KERNEL 0x80

BPF_TABLE("lru_hash", u32, u32, kernel_sigkill, 1024);  // sending tid -> pid it just sent SIGKILL to
BPF_HASH(oom_victims, u32, u32, 1024);  // pid killed by the OOM killer -> 1
BPF_HASH(oom_kills, u64, u64, KPOD_MAX_CGROUPS);

TRACEPOINT_PROBE(signal, signal_generate) {
    if (args->sig != KPOD_SIGKILL || args->code != KPOD_SI_KERNEL)
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    u32 target = args->pid;
    kernel_sigkill.update(&tid, &target);
    return 0;
}

TRACEPOINT_PROBE(oom, mark_victim) {
    u32 tid = bpf_get_current_pid_tgid();
    u32 pid = args->pid;
    u32 *target = kernel_sigkill.lookup(&tid);
    if (!target || *target != pid)
        return 0;  // marked without a kill: the task was exiting anyway
    kernel_sigkill.delete(&tid);
    u32 one = 1;
    if (oom_victims.update(&pid, &one))
        kpod_count_loss(KPOD_LOSS_OOM_VICTIMS);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u32 pid = args->pid;
    if (!oom_victims.lookup(&pid))
        return 0;
    oom_victims.delete(&pid);
    u64 cgroup_id = bpf_get_current_cgroup_id();  // current is the victim
    u64 zero = 0;
    u64 *n = oom_kills.lookup_or_try_init(&cgroup_id, &zero);
    if (!n) {
        kpod_count_loss(KPOD_LOSS_OOM_KILLS);
        return 0;
    }
    __sync_fetch_and_add(n, 1);
    return 0;
}
