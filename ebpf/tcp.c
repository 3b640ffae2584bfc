// TCP per cgroup: bytes sent/received, retransmitted segments, connections opened, RTT samples.
//
// Attribution: many TCP events run in softirq or timer context (receive, ACK processing, retransmit
// timers, passive ESTABLISHED), where bpf_get_current_cgroup_id() names whichever task was interrupted.
// So nothing here uses the current task:
//  - cgroup_skb ingress/egress programs (attached to the cgroup v2 root through BPF links, which coexist
//    with other programs like BPF_F_ALLOW_MULTI) see every packet of every full socket; bpf_skb_cgroup_id(skb) is the cgroup that owns the socket. The socket's
//    own counters (bpf_tcp_sock: bytes_acked, bytes_received, total_retrans; stable UAPI) are turned into
//    per-cgroup deltas against the last values seen, kept per socket in sk_storage. A value that moved
//    after the last packet is picked up by the socket's next packet (the ACK of the data, the FIN...).
//  - a sock_ops program gets the ESTABLISHED callbacks and, per socket, every RTT measurement (one sample
//    per RTT_CB: the measured RTT on kernel >= 6.12, the smoothed RTT before). It charges them to the
//    cgroup recorded in the socket's storage by the cgroup_skb programs. The storage is cloned
//    (BPF_F_CLONE) from a listener to the sockets it accepts, which live in the listener's cgroup.
// The cgroup_skb programs never drop anything: they always return 1.
#include "kpod.h"

#define MAP_TCP_COUNTS 0
#define MAP_TCP_RTT 1
#define MAP_SK_STORAGE 2

#define KPOD_IPPROTO_TCP 6
#define KPOD_OP_RTT_CB 12                 // BPF_SOCK_OPS_RTT_CB
#define KPOD_OP_ACTIVE_ESTABLISHED_CB 4   // BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
#define KPOD_OP_PASSIVE_ESTABLISHED_CB 5  // BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB
#define KPOD_RTT_CB_FLAG 8                // BPF_SOCK_OPS_RTT_CB_FLAG
#define KPOD_F_CLONE (1U << 9)            // BPF_F_CLONE
#define KPOD_F_NO_PREALLOC 1              // BPF_F_NO_PREALLOC

struct tcp_counts {
    u64 bytes_sent;      // acknowledged by the peer (bytes_acked: no retransmitted copies), + 1 for a FIN
    u64 bytes_received;  // received in order (bytes_received), + 1 for a FIN
    u64 retransmits;     // segments retransmitted
    u64 connections;     // connections that reached ESTABLISHED (active or passive)
};

struct sock_seen {
    u64 cgroup_id;       // owner of the socket, from bpf_skb_cgroup_id()
    u64 bytes_acked;     // last values already charged
    u64 bytes_received;
    u64 total_retrans;   // u64: bcc's target has 64-bit compare-and-swap only
    u64 seen;            // 0 until the first packet set a baseline
};

// sk_storage with BPF_F_CLONE (bcc's BPF_SK_STORAGE has no way to pass it).
struct sock_state_table_t {
    int key;
    struct sock_seen leaf;
    void *(*sk_storage_get)(void *, void *, int);
    int (*sk_storage_delete)(void *);
    u32 flags;
};
__attribute__((section("maps/sk_storage")))
struct sock_state_table_t sock_state = {.flags = KPOD_F_NO_PREALLOC | KPOD_F_CLONE};
BPF_ANNOTATE_KV_PAIR(sock_state, int, struct sock_seen);

BPF_HASH(tcp_counts, u64, struct tcp_counts, KPOD_MAX_CGROUPS);
BPF_HASH(tcp_rtt, u64, struct kpod_hist, KPOD_MAX_CGROUPS);

static __always_inline struct tcp_counts *counts_of(u64 cgroup_id) {
    struct tcp_counts *c = tcp_counts.lookup(&cgroup_id);
    if (c)
        return c;
    struct tcp_counts zero = {};
    kpod_count_failure(MAP_TCP_COUNTS, tcp_counts.insert(&cgroup_id, &zero));
    return tcp_counts.lookup(&cgroup_id);
}

static __always_inline int account(struct __sk_buff *skb) {
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return 1;
    sk = bpf_sk_fullsock(sk);
    if (!sk || sk->protocol != KPOD_IPPROTO_TCP)
        return 1;
    struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
    if (!tp)
        return 1;
    struct sock_seen *s = sock_state.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!s) {
        kpod_count_failure(MAP_SK_STORAGE, -12);
        return 1;
    }
    u64 cgroup_id = bpf_skb_cgroup_id(skb);
    if (!s->seen || s->cgroup_id != cgroup_id) {
        // First packet of a socket that existed before the agent started: baseline only, no history.
        s->bytes_acked = tp->bytes_acked;
        s->bytes_received = tp->bytes_received;
        s->total_retrans = tp->total_retrans;
        s->cgroup_id = cgroup_id;
        s->seen = 1;
        return 1;
    }
    // Ingress (softirq, before the socket lock) and egress (process context) of one socket can run at
    // the same time on two CPUs: each delta is claimed with a compare-and-swap on the last-seen value,
    // so it is charged once. A loser leaves its part to the socket's next packet.
    u64 d_sent = 0, d_recv = 0, d_retr = 0;
    u64 old = s->bytes_acked, now = tp->bytes_acked;
    if (now > old && __sync_val_compare_and_swap(&s->bytes_acked, old, now) == old)
        d_sent = now - old;
    old = s->bytes_received;
    now = tp->bytes_received;
    if (now > old && __sync_val_compare_and_swap(&s->bytes_received, old, now) == old)
        d_recv = now - old;
    old = s->total_retrans;
    now = tp->total_retrans;  // a u32 in the kernel; it does not wrap within a socket's life in practice
    if (now > old && __sync_val_compare_and_swap(&s->total_retrans, old, now) == old)
        d_retr = now - old;
    if (d_sent | d_recv | d_retr) {
        struct tcp_counts *c = counts_of(cgroup_id);
        if (c) {
            if (d_sent)
                __sync_fetch_and_add(&c->bytes_sent, d_sent);
            if (d_recv)
                __sync_fetch_and_add(&c->bytes_received, d_recv);
            if (d_retr)
                __sync_fetch_and_add(&c->retransmits, d_retr);
        }
    }
    return 1;
}

int kpod_tcp_ingress(struct __sk_buff *skb) {
    return account(skb);
}

int kpod_tcp_egress(struct __sk_buff *skb) {
    return account(skb);
}

int kpod_tcp_sockops(struct bpf_sock_ops *skops) {
    int op = skops->op;
    if (op != KPOD_OP_ACTIVE_ESTABLISHED_CB && op != KPOD_OP_PASSIVE_ESTABLISHED_CB && op != KPOD_OP_RTT_CB)
        return 1;
    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 1;
    if (op != KPOD_OP_RTT_CB) {
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | KPOD_RTT_CB_FLAG);
        struct sock_seen *s = sock_state.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (!s)
            return 1;
        // The handshake moved bytes_acked by 1 (our SYN, acked): payload counting starts here.
        // total_retrans keeps its older baseline: SYN/SYN-ACK retransmits are real retransmits.
        s->bytes_acked = skops->bytes_acked;
        s->bytes_received = skops->bytes_received;
        if (s->cgroup_id) {
            struct tcp_counts *c = counts_of(s->cgroup_id);
            if (c)
                __sync_fetch_and_add(&c->connections, 1);
        }
        return 1;
    }
    struct sock_seen *s = sock_state.sk_storage_get(sk, 0, 0);
    if (!s || !s->cgroup_id)
        return 1;
    // Kernel >= 6.12 passes the measured RTT (us) in args[0] and the smoothed RTT (us << 3, never 0
    // after a measurement) in args[1]. Older kernels pass no arguments: fall back to the smoothed RTT.
    long rtt_us = (long)skops->args[0];
    if (skops->args[1] == 0)
        rtt_us = skops->srtt_us >> 3;
    if (rtt_us < 0)
        return 1;
    u64 cgroup_id = s->cgroup_id;
    u64 rtt_ns = (u64)rtt_us * 1000;
    struct kpod_hist *h = tcp_rtt.lookup(&cgroup_id);
    if (!h) {
        struct kpod_hist zero = {};
        kpod_count_failure(MAP_TCP_RTT, tcp_rtt.insert(&cgroup_id, &zero));
        h = tcp_rtt.lookup(&cgroup_id);
        if (!h)
            return 1;
    }
    __sync_fetch_and_add(&h->slots[kpod_slot(rtt_ns)], 1);
    __sync_fetch_and_add(&h->sum, rtt_ns);
    __sync_fetch_and_add(&h->count, 1);
    return 1;
}

// A removed cgroup's entries are deleted by user space after one more read (see kpod.h).
TRACEPOINT_PROBE(cgroup, cgroup_rmdir) {
    if (args->root != KPOD_V2_HIERARCHY)
        return 0;
    kpod_note_removed(args->id);
    return 0;
}
