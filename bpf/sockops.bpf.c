// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops: when a redirected connection is established, its original destination moves from the
 * socket-cookie record to a 4-tuple record that both ends can find (SO_ORIGINAL_DST is asked on the
 * accepting side), and both ends of a loopback pair join the sockhash for the sk_msg fast path.
 */
#include "common.h"
#include "maps.h"

static __always_inline void own_key(struct bpf_sock_ops *skops, struct pair_key *k, int initiator)
{
	__u32 lip = skops->local_ip4, rip = skops->remote_ip4;
	__u16 lport = (__u16)skops->local_port, rport = (__u16)bpf_ntohl(skops->remote_port);
	k->pad = 0;
	if (initiator) {
		k->sip = lip, k->sport = lport, k->dip = rip, k->dport = rport;
	} else {
		k->sip = rip, k->sport = rport, k->dip = lip, k->dport = lport;
	}
	k->netns = pair_netns(k->sip, k->dip, bpf_get_netns_cookie(skops));
}

/* The sockhash is keyed by each socket's own view: s = local end, d = remote end. */
static __always_inline void local_key(struct bpf_sock_ops *skops, struct pair_key *k)
{
	own_key(skops, k, 1);
}

/* A socket in the sockhash gets the kernel's sockmap receive path, so switching the fast path off
 * means not adding sockets at all, not just not redirecting. */
static __always_inline int sockmap_enabled(void)
{
	struct mesh_config *cfg = get_config();
	return cfg && (cfg->flags & CFG_F_SOCKMAP);
}

static __always_inline void join_sockhash(struct bpf_sock_ops *skops)
{
	struct pair_key k;
	local_key(skops, &k);
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	/* Before the sockhash: a peer that can redirect to us can also see our queue. */
	struct sock_ref ref = { .addr = (__u64)(unsigned long)sk, .cookie = bpf_get_socket_cookie(skops) };
	if (bpf_map_update_elem(&sock_refs, &k, &ref, BPF_ANY)) {
		count(C_MAP_ERROR);
		return;
	}
	if (bpf_sock_hash_update(skops, &sock_pair_map, &k, BPF_ANY)) {
		bpf_map_delete_elem(&sock_refs, &k);
		count(C_SOCKMAP_ERROR);
		return;
	}
	count(C_SOCKMAP_ADD);
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void active_established(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct orig_dst *od = bpf_map_lookup_elem(&cookie_orig_dst, &cookie);
	if (!od)
		return;
	struct orig_dst copy = *od;
	bpf_map_delete_elem(&cookie_orig_dst, &cookie);
	struct pair_key k;
	own_key(skops, &k, 1);
	if (bpf_map_update_elem(&pair_orig_dst, &k, &copy, BPF_ANY)) {
		count(C_MAP_ERROR);
		return;
	}
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	/* Only same-namespace pairs take the fast path: their handshake completes before connect()
	 * returns, so no byte can still be in flight on the normal path when redirection starts. */
	if (is_loopback(skops->remote_ip4) && sockmap_enabled())
		join_sockhash(skops);
}

static __always_inline void passive_established(struct bpf_sock_ops *skops)
{
	if (!is_loopback(skops->local_ip4) || !sockmap_enabled())
		return;
	struct pair_key k;
	own_key(skops, &k, 0);
	if (!bpf_map_lookup_elem(&pair_orig_dst, &k))
		return;
	join_sockhash(skops);
}

static __always_inline void closed(struct bpf_sock_ops *skops)
{
	struct pair_key k;
	own_key(skops, &k, 1);
	bpf_map_delete_elem(&pair_orig_dst, &k);
	local_key(skops, &k);
	bpf_map_delete_elem(&sock_refs, &k);
}

/* AF_INET6 sockets talking to ::ffff:a.b.c.d are IPv4 connections: the kernel keeps their IPv4
 * addresses where AF_INET ones have them, so the same keys work for both. */
static __always_inline int carries_ipv4(struct bpf_sock_ops *skops)
{
	if (skops->family == AF_INET)
		return 1;
	return skops->family == AF_INET6 &&
	       is_v4mapped(skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2]);
}

SEC("sockops")
int mb_sockops(struct bpf_sock_ops *skops)
{
	if (!carries_ipv4(skops))
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		active_established(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		passive_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			closed(skops);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
