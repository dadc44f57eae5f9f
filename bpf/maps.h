/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every object declares the same maps; the agent pins them by name in one directory, so libbpf hands
 * all objects the same map instances and a restarted agent finds them again.
 */
#pragma once
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_config);
} mesh_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct addr16);
	__type(value, struct pod_config);
} local_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct pod_ips);
} mark_pod_ips SEC(".maps");

/*
 * Network namespace cookie -> pod IPs, written next to the mark entry. The mark listener lives only as
 * long as the daemon that opened it; this entry is pinned, so a pod stays identified while a
 * restarting daemon rebuilds its listeners.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct pod_ips);
} netns_pod_ips SEC(".maps");

/*
 * Connection-keyed state. Each entry is removed when its connection ends, so nothing here needs an LRU
 * (which would let a burst of new connections evict live ones, silently):
 *   sock_orig_dst   per socket, freed by the kernel with the socket
 *   pair_orig_dst   per connection, removed when the socket that owns it (sock_pair) closes
 *   ingress_syn     per inbound handshake in progress: the only LRU, adopted into pair_orig_dst when
 *                   the proxy's socket is established, so a flood of bare SYNs only evicts other
 *                   handshakes, never an established connection
 * The agent sets the capacities of pair_orig_dst, sock_refs, sock_pair_map and ingress_syn at load
 * (--conn-table-size); the sizes here are what a plain load of the object gets.
 */

/* Original destination of a socket we redirected (connect4/6, DNS sendmsg). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct orig_dst);
} sock_orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct pair_key);
	__type(value, struct orig_dst);
} pair_orig_dst SEC(".maps");

/* The pair_orig_dst entry a socket owns, deleted when it closes. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pair_key);
} sock_pair SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pair_key);
	__type(value, struct orig_dst);
} ingress_syn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct pair_key);
	__type(value, __u32);
} sock_pair_map SEC(".maps");

/* Keyed like sock_pair_map; written when a socket joins it, removed when it closes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct pair_key);
	__type(value, struct sock_ref);
} sock_refs SEC(".maps");

/* Entries in pair_orig_dst (enum table), kept by the programs so that connect() and an inbound SYN
 * can be refused while the table has no room, instead of a connection losing its record midway. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, T_MAX);
	__type(key, __u32);
	__type(value, __s64);
} table_fill SEC(".maps");

/*
 * Sockets whose writes have left the fast path for good (value: the C_MSG_* counter that says why).
 * Freed with the socket.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} sock_slow_path SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32); /* enum counter; array keys must be plain 32-bit ints for the kernel's BTF check */
	__type(value, __u64);
} counters SEC(".maps");

/* Decision events for `merbridge monitor`; written only while monitor_lease is in the future. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Key 0: bpf_ktime_get_ns() (CLOCK_MONOTONIC) until which a monitor is listening (it renews every second, so
 * a monitor that dies stops the events within seconds). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} monitor_lease SEC(".maps");

/*
 * Per-pod counters, keyed by a pod IP (struct addr16: the pod's IPv4 when it has one, else its IPv6). The agent creates an entry for each meshed pod
 * of the node and removes it with the pod; the programs only count into entries that exist, so the
 * series are bounded by the node's pods.
 */
struct pod_stats {
	__u64 redirected;  /* outbound connections sent to the proxy */
	__u64 passed;      /* connections of the pod's app its rules left alone */
	__u64 inbound;     /* inbound connections rewritten to the proxy (XDP/TC, or same-node proxies) */
	__u64 origdst_miss; /* SO_ORIGINAL_DST asked in the pod with nothing recorded */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct addr16);
	__type(value, struct pod_stats);
} pod_counters SEC(".maps");

static __always_inline void count(enum counter c)
{
	__u32 k = c;
	__u64 *v = bpf_map_lookup_elem(&counters, &k);
	if (v)
		*v += 1;
}

static __always_inline void fill_add(enum table t, __s64 d)
{
	__u32 k = t;
	__s64 *v = bpf_map_lookup_elem(&table_fill, &k);
	if (v)
		__sync_fetch_and_add(v, d);
}

/* Whether a new connection still fits: false (and counted) once pair_orig_dst holds what the agent
 * said it may (mesh_config.conn_admit, below its capacity by room for connections in flight). */
static __always_inline int conn_admitted(const struct mesh_config *cfg)
{
	__u32 k = T_PAIR_ORIG_DST;
	__s64 *v = bpf_map_lookup_elem(&table_fill, &k);
	if (!cfg->conn_admit || !v || *v < (__s64)cfg->conn_admit)
		return 1;
	count(C_TABLE_FULL);
	return 0;
}

/* Records a connection's original destination; a record of an earlier connection on the same 4-tuple
 * (its owner's close not seen, e.g. attached after it) is replaced. */
static __always_inline int pair_insert(struct pair_key *k, struct orig_dst *od)
{
	long err = bpf_map_update_elem(&pair_orig_dst, k, od, BPF_NOEXIST);
	if (!err) {
		fill_add(T_PAIR_ORIG_DST, 1);
		return 0;
	}
	if (err == -17 /* EEXIST */ && !bpf_map_update_elem(&pair_orig_dst, k, od, BPF_EXIST))
		return 0;
	count(err == -7 /* E2BIG: full */ ? C_TABLE_FULL : C_MAP_ERROR);
	return -1;
}

static __always_inline void pair_delete(struct pair_key *k)
{
	if (!bpf_map_delete_elem(&pair_orig_dst, k))
		fill_add(T_PAIR_ORIG_DST, -1);
}

static __always_inline int monitoring(void)
{
	__u32 k = 0;
	__u64 *until = bpf_map_lookup_elem(&monitor_lease, &k);
	return until && *until > bpf_ktime_get_ns();
}

/* Not inlined: each program carries one copy of the event path rather than one per decision. */
static __noinline int send_event(struct event *e, enum event_kind kind, enum event_reason reason)
{
	e->kind = kind;
	e->reason = reason;
	e->ts_ns = bpf_ktime_get_ns();
	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0))
		count(C_EVENTS_LOST);
	return 0;
}

/* Sends an event if a monitor listens; `e` needs kind, reason and whatever addresses apply. */
static __always_inline void emit(struct event *e)
{
	if (monitoring())
		send_event(e, e->kind, e->reason);
}

enum pod_stat { PS_REDIRECTED, PS_PASSED, PS_INBOUND, PS_ORIGDST_MISS };

static __always_inline void pod_count(const struct addr16 *pod_ip, enum pod_stat what)
{
	if (addr_zero(pod_ip))
		return;
	struct pod_stats *s = bpf_map_lookup_elem(&pod_counters, pod_ip);
	if (!s)
		return;
	switch (what) {
	case PS_REDIRECTED:
		s->redirected++;
		break;
	case PS_PASSED:
		s->passed++;
		break;
	case PS_INBOUND:
		s->inbound++;
		break;
	case PS_ORIGDST_MISS:
		s->origdst_miss++;
		break;
	}
}

static __always_inline struct mesh_config *get_config(void)
{
	__u32 k = 0;
	struct mesh_config *cfg = bpf_map_lookup_elem(&mesh_config, &k);
	/* An agent that has not written its config yet leaves every decision to the kernel. */
	if (!cfg || cfg->outbound_port == 0)
		return 0;
	return cfg;
}

static __always_inline int is_loopback(__u32 ip_be)
{
	return (bpf_ntohl(ip_be) & 0xff000000) == LOOPBACK_NET;
}

/* 127.0.0.0/8 written ::ffff:127.x.y.z, or ::1. */
static __always_inline int addr_loopback(const struct addr16 *a)
{
	if (addr_is4(a))
		return is_loopback(a->w[3]);
	return !a->w[0] && !a->w[1] && !a->w[2] && a->w[3] == bpf_htonl(1);
}

static __always_inline __u64 pair_netns(const struct addr16 *sip, const struct addr16 *dip, __u64 cookie)
{
	return addr_loopback(sip) && addr_loopback(dip) ? cookie : 0;
}
