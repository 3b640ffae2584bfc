// TCP per cgroup: bytes sent/received, retransmitted segments, connections opened, RTT samples.
//
// Attribution: many TCP events run in softirq or timer context (receive, ACK processing, retransmit
// timers, passive ESTABLISHED), where bpf_get_current_cgroup_id() names whichever task was interrupted.
// So nothing here uses the current task:
//  - cgroup_skb ingress/egress programs (attached where pods live, through BPF links, which coexist with
//    other programs like BPF_F_ALLOW_MULTI) see every packet of every full socket below that cgroup;
//    bpf_skb_cgroup_id(skb) is the cgroup that owns the socket. The socket's own counters
//    (bpf_tcp_sock: bytes_acked, bytes_received, total_retrans; stable UAPI) are turned into per-cgroup
//    deltas against the last values seen, kept per socket in sk_storage.
//  - a sock_ops program gets the ESTABLISHED callbacks and, per socket, every RTT measurement (one sample
//    per RTT_CB: the measured RTT on kernel >= 6.12, the smoothed RTT before) and the state changes. It
//    charges them to the cgroup recorded in the socket's storage by the cgroup_skb programs. The storage
//    is cloned (BPF_F_CLONE) from a listener to the sockets it accepts, which live in the listener's
//    cgroup.
// When a counter moves: cgroup_skb sees a packet before TCP processes it, so the bytes an ACK covers are
// claimed by the RTT callback of that ACK (bytes_acked is updated before it), by the socket's next
// packet, or at the latest when the socket goes to CLOSE (STATE_CB): a reply whose only ACK arrives as
// the socket closes (LAST_ACK) still counts.
// The cgroup_skb programs never drop anything: they always return 1.
#include "kpod.h"

#define KPOD_IPPROTO_TCP 6
#define KPOD_OP_ACTIVE_ESTABLISHED_CB 4   // BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
#define KPOD_OP_PASSIVE_ESTABLISHED_CB 5  // BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB
#define KPOD_OP_STATE_CB 10               // BPF_SOCK_OPS_STATE_CB: args[0] old, args[1] new state
#define KPOD_OP_RTT_CB 12                 // BPF_SOCK_OPS_RTT_CB
#define KPOD_STATE_CB_FLAG 4              // BPF_SOCK_OPS_STATE_CB_FLAG
#define KPOD_RTT_CB_FLAG 8                // BPF_SOCK_OPS_RTT_CB_FLAG
#define KPOD_TCP_CLOSE 7                  // BPF_TCP_CLOSE
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

// Per CPU: every segment of a busy pod updates its entry, from whichever CPU handles the packet; per-CPU
// copies keep those updates off a shared cache line (summed by the reader). Still atomic: process-context
// egress can be interrupted by softirq ingress on the same CPU.
BPF_PERCPU_HASH(tcp_counts, u64, struct tcp_counts, KPOD_MAX_CGROUPS);
BPF_HASH(tcp_rtt, u64, struct kpod_hist, KPOD_MAX_CGROUPS);

static __always_inline struct tcp_counts *counts_of(u64 cgroup_id) {
    struct tcp_counts zero = {};
    struct tcp_counts *c = tcp_counts.lookup_or_try_init(&cgroup_id, &zero);
    if (!c)
        kpod_count_loss(KPOD_LOSS_TCP_COUNTS);
    return c;
}

// Charge what the socket's counters moved since the last claim. Ingress (softirq, before the socket
// lock), egress (process context) and sock_ops of one socket can run at the same time on two CPUs: each
// delta is claimed with a compare-and-swap on the last-seen value, so it is charged once. A loser leaves
// its part to the next claim.
static __always_inline void claim(struct sock_seen *s, u64 acked, u64 received, u64 retrans) {
    u64 d_sent = 0, d_recv = 0, d_retr = 0;
    u64 old = s->bytes_acked;
    if (acked > old && __sync_val_compare_and_swap(&s->bytes_acked, old, acked) == old)
        d_sent = acked - old;
    old = s->bytes_received;
    if (received > old && __sync_val_compare_and_swap(&s->bytes_received, old, received) == old)
        d_recv = received - old;
    old = s->total_retrans;  // a u32 in the kernel; it does not wrap within a socket's life in practice
    if (retrans > old && __sync_val_compare_and_swap(&s->total_retrans, old, retrans) == old)
        d_retr = retrans - old;
    if (!(d_sent | d_recv | d_retr))
        return;
    struct tcp_counts *c = counts_of(s->cgroup_id);
    if (!c)
        return;
    if (d_sent)
        __sync_fetch_and_add(&c->bytes_sent, d_sent);
    if (d_recv)
        __sync_fetch_and_add(&c->bytes_received, d_recv);
    if (d_retr)
        __sync_fetch_and_add(&c->retransmits, d_retr);
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
        kpod_count_loss(KPOD_LOSS_SOCK_STATE);
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
    claim(s, tp->bytes_acked, tp->bytes_received, tp->total_retrans);
    return 1;
}

int kpod_tcp_ingress(struct __sk_buff *skb) {
    return account(skb);
}

int kpod_tcp_egress(struct __sk_buff *skb) {
    return account(skb);
}

static __always_inline void add_rtt(struct bpf_sock_ops *skops, u64 cgroup_id) {
    // Kernel >= 6.12 passes the measured RTT (us) in args[0] and the smoothed RTT (us << 3, never 0
    // after a measurement) in args[1]. Older kernels pass no arguments: fall back to the smoothed RTT.
    long rtt_us = (long)skops->args[0];
    if (skops->args[1] == 0)
        rtt_us = skops->srtt_us >> 3;
    if (rtt_us < 0)
        return;
    struct kpod_hist zero = {};
    struct kpod_hist *h = tcp_rtt.lookup_or_try_init(&cgroup_id, &zero);
    if (!h) {
        kpod_count_loss(KPOD_LOSS_TCP_RTT);
        return;
    }
    kpod_hist_add(h, (u64)rtt_us * 1000);
}

int kpod_tcp_sockops(struct bpf_sock_ops *skops) {
    int op = skops->op;
    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 1;
    if (op == KPOD_OP_ACTIVE_ESTABLISHED_CB || op == KPOD_OP_PASSIVE_ESTABLISHED_CB) {
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | KPOD_RTT_CB_FLAG | KPOD_STATE_CB_FLAG);
        struct sock_seen *s = sock_state.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (!s) {
            kpod_count_loss(KPOD_LOSS_SOCK_STATE);
            return 1;
        }
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
    if (op != KPOD_OP_RTT_CB && !(op == KPOD_OP_STATE_CB && skops->args[1] == KPOD_TCP_CLOSE))
        return 1;
    struct sock_seen *s = sock_state.sk_storage_get(sk, 0, 0);
    if (!s || !s->seen || !s->cgroup_id)
        return 1;
    u64 cgroup_id = s->cgroup_id;
    claim(s, skops->bytes_acked, skops->bytes_received, skops->total_retrans);
    if (op == KPOD_OP_RTT_CB)
        add_rtt(skops, cgroup_id);
    return 1;
}
