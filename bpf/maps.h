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
	__type(key, __u32);
	__type(value, struct pod_config);
} local_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u32);
} mark_pod_ips SEC(".maps");

/*
 * Network namespace cookie -> pod IP, written next to the mark entry. The mark listener lives only as
 * long as the daemon that opened it; this entry is pinned, so a pod stays identified while a
 * restarting daemon rebuilds its listeners.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u32);
} netns_pod_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct orig_dst);
} cookie_orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pair_key);
	__type(value, struct orig_dst);
} pair_orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct pair_key);
	__type(value, __u32);
} sock_pair_map SEC(".maps");

/* Keyed like sock_pair_map; written when a socket joins it, removed when it closes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pair_key);
	__type(value, struct sock_ref);
} sock_refs SEC(".maps");

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

static __always_inline void count(enum counter c)
{
	__u32 k = c;
	__u64 *v = bpf_map_lookup_elem(&counters, &k);
	if (v)
		*v += 1;
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

static __always_inline __u64 pair_netns(__u32 sip, __u32 dip, __u64 cookie)
{
	return is_loopback(sip) && is_loopback(dip) ? cookie : 0;
}
