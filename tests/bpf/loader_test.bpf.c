/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Fixture for the loader's kernel tests: one program per attach style the loader supports and maps
 * of the kinds it handles (hash, array, per-CPU array, plus a .rodata global that must never be
 * pinned). It does nothing a mesh would: it only makes attachment observable.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define TC_ACT_OK 0

/* Destination port (host order) -> port to connect to instead (host order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u16);
} port_rewrites SEC(".maps");

/* Index 0: how many connects were rewritten. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Index 0: rewritten connects, counted on the CPU that made them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cpu_hits SEC(".maps");

/* Lives in .rodata: an internal map libbpf creates, which pinning must skip. */
const volatile __u32 rewrite_enabled = 1;

SEC("cgroup/connect4")
int rewrite_port(struct bpf_sock_addr *ctx)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u16 *to;
	__u32 zero = 0;
	__u64 *count;
	__u32 *hits;

	if (!rewrite_enabled)
		return 1;
	to = bpf_map_lookup_elem(&port_rewrites, &port);
	if (!to)
		return 1;
	ctx->user_port = bpf_htons(*to);
	count = bpf_map_lookup_elem(&stats, &zero);
	if (count)
		__sync_fetch_and_add(count, 1);
	hits = bpf_map_lookup_elem(&cpu_hits, &zero);
	if (hits)
		*hits += 1;
	return 1;
}

SEC("xdp")
int pass_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* A second XDP program, so that replacing one attachment by another is observable. */
SEC("xdp")
int pass_xdp_alt(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int pass_tc(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
