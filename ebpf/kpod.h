// Shared by the kpod programs. The loader pastes it in place of `#include "kpod.h"` (bcc rewrites map
// method calls such as `m.lookup()` only in the main source text, not in included files).
//
// Per-cgroup maps are keyed by the cgroup v2 id (the inode number of the cgroup's cgroup2 directory).
// Counters stay cumulative in the kernel; user space only reads them (never read-and-delete).
// Histograms keep bcc log2 slots plus the exact sum and count: slot k (k >= 2) holds values in
// [2^(k-1), 2^k - 1] ns, slot 1 holds 0 and 1, the last slot also holds everything larger.

#ifndef KPOD_MAX_CGROUPS
#define KPOD_MAX_CGROUPS 4096
#endif
#ifndef KPOD_MAX_TASKS
#define KPOD_MAX_TASKS 65536
#endif

#define KPOD_HIST_SLOTS 40
#define KPOD_EEXIST 17
#define KPOD_V2_HIERARCHY 0  // cgroup:cgroup_rmdir `root` of the unified hierarchy

struct kpod_hist {
    u64 slots[KPOD_HIST_SLOTS];
    u64 sum;    // ns
    u64 count;
};

// failures[i]: inserts that failed (map full) for the map with index i; read as a self-metric.
BPF_ARRAY(failures, u64, 8);

static __always_inline void kpod_count_failure(int map_index, int err) {
    if (err == 0 || err == -KPOD_EEXIST)  // EEXIST: another CPU inserted the same key first
        return;
    u64 *n = failures.lookup(&map_index);
    if (n)
        __sync_fetch_and_add(n, 1);
}

// Ids of removed cgroups (cgroup:cgroup_rmdir). Their entries stay until user space has read them once
// more and deletes them: a container's last events (the OOM kill that ended it) must reach the export,
// not vanish with its cgroup.
BPF_HASH(removed_cgroups, u64, u8, KPOD_MAX_CGROUPS);

static __always_inline void kpod_note_removed(u64 id) {
    u8 one = 1;
    removed_cgroups.update(&id, &one);
}

static __always_inline unsigned int kpod_slot(u64 v) {
    unsigned int slot = bpf_log2l(v);
    return slot < KPOD_HIST_SLOTS ? slot : KPOD_HIST_SLOTS - 1;
}
