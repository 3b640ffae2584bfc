// Shared by the kpod programs. The loader pastes it in place of `#include "kpod.h"` (bcc rewrites map
// method calls such as `m.lookup()` only in the main source text, not in included files).
//
// Per-cgroup maps are keyed by the cgroup v2 id (the inode number of the cgroup's cgroup2 directory).
// Counters stay cumulative in the kernel; user space only reads them (never read-and-delete).
// Histograms keep bcc log2 slots plus the exact sum and count: slot k (k >= 2) holds values in
// [2^(k-1), 2^k - 1] ns, slot 1 holds 0 and 1, the last slot also holds everything larger.
//
// Constants shared with Python come from Python, as -D flags (kpod_otel/bpf/program.py, `defines()`):
//   KPOD_MAX_CGROUPS, KPOD_MAX_TASKS     map sizes
//   KPOD_HIST_SLOTS                      kpod_otel/bpf/histogram.py SLOTS
//   KPOD_LOSS_SLOTS, KPOD_LOSS_<NAME>    the `losses` array: its size and one index per named loss
//                                        (ProgramSpec.failure_maps and .missing_marks, in that order)
// so that no index is kept in sync by position by hand.

#if !defined(KPOD_MAX_CGROUPS) || !defined(KPOD_MAX_TASKS) || !defined(KPOD_HIST_SLOTS) || !defined(KPOD_LOSS_SLOTS)
#error "kpod.h needs the loader's -D flags (kpod_otel.bpf.program.defines)"
#endif

#define KPOD_V2_HIERARCHY 0  // cgroup:cgroup_rmdir `root` of the unified hierarchy

struct kpod_hist {
    u64 slots[KPOD_HIST_SLOTS];
    u64 sum;    // ns
    u64 count;
};

// losses[i]: events a program could not record, by cause (read as self-metrics): an insert that found
// its map full (KPOD_LOSS_<map>), or a start timestamp that was not there (KPOD_LOSS_<lru map>).
BPF_ARRAY(losses, u64, KPOD_LOSS_SLOTS);

static __always_inline void kpod_count_loss(int index) {
    u64 *n = losses.lookup(&index);
    if (n)
        __sync_fetch_and_add(n, 1);
}

// The usual per-cgroup entry access is
//     struct x *v = map.lookup_or_try_init(&cgroup_id, &zero);
//     if (!v) { kpod_count_loss(KPOD_LOSS_MAP); return; }
// (bcc: lookup, else insert with BPF_NOEXIST, then lookup again; NULL only when the insert failed
// for lack of room: an insert that lost a race to another CPU finds that CPU's entry).

static __always_inline unsigned int kpod_slot(u64 v) {
    unsigned int slot = bpf_log2l(v);
    return slot < KPOD_HIST_SLOTS ? slot : KPOD_HIST_SLOTS - 1;
}

static __always_inline void kpod_hist_add(struct kpod_hist *h, u64 v) {
    __sync_fetch_and_add(&h->slots[kpod_slot(v)], 1);
    __sync_fetch_and_add(&h->sum, v);
    __sync_fetch_and_add(&h->count, 1);
}

// Ids of removed cgroups (cgroup:cgroup_rmdir). Their entries stay until user space has read them once
// more and deletes them: a container's last events (the OOM kill that ended it) must reach the export,
// not vanish with its cgroup. This map is shared by no one: each program has its own.
BPF_HASH(removed_cgroups, u64, u8, KPOD_MAX_CGROUPS);

TRACEPOINT_PROBE(cgroup, cgroup_rmdir) {
    if (args->root != KPOD_V2_HIERARCHY)
        return 0;
    u64 id = args->id;
    u8 one = 1;
    if (removed_cgroups.update(&id, &one))  // full: this cgroup's entries wait for the sweep
        kpod_count_loss(KPOD_LOSS_REMOVED_CGROUPS);
    return 0;
}
