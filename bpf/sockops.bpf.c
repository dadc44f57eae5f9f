// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops: when a redirected connection is established, its original destination is copied from the
 * socket's record to a 4-tuple record that both ends can find (SO_ORIGINAL_DST is asked on the
 * accepting side), and both ends of a loopback pair join the sockhash for the sk_msg fast path. An
 * inbound connection rewritten by the ingress program gets its handshake record adopted into the same
 * table when the proxy's socket is established. The socket that owns a 4-tuple record removes it when
 * it closes.
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
	long err = bpf_map_update_elem(&sock_refs, &k, &ref, BPF_NOEXIST);
	if (err == -17 /* EEXIST: a closed socket's, same 4-tuple */)
		err = bpf_map_update_elem(&sock_refs, &k, &ref, BPF_EXIST);
	else if (!err)
		fill_add(T_SOCK_REFS, 1);
	if (err) {
		/* A full table only costs this socket the fast path. */
		count(C_SOCKMAP_ERROR);
		return;
	}
	if (bpf_sock_hash_update(skops, &sock_pair_map, &k, BPF_ANY)) {
		if (!bpf_map_delete_elem(&sock_refs, &k))
			fill_add(T_SOCK_REFS, -1);
		count(C_SOCKMAP_ERROR);
		return;
	}
	count(C_SOCKMAP_ADD);
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	struct event ev = {
		.kind = EV_FASTPATH,
		.reason = R_FAST_JOIN,
		.netns = k.netns,
		.sip = k.sip,
		.dip = k.dip,
		.sport = k.sport,
		.dport = k.dport,
	};
	emit(&ev);
}

/* The socket now owns the record under `k`: it is removed when the socket closes. */
static __always_inline int own_record(struct bpf_sock_ops *skops, struct pair_key *k, struct orig_dst *od)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return -1;
	struct pair_key *owned = bpf_sk_storage_get(&sock_pair, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!owned) {
		count(C_MAP_ERROR);
		return -1;
	}
	if (pair_insert(k, od))
		return -1;
	*owned = *k;
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	return 0;
}

static __always_inline void active_established(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct orig_dst *od = bpf_sk_storage_get(&sock_orig_dst, sk, 0, 0);
	if (!od)
		return;
	struct orig_dst copy = *od;
	struct pair_key k;
	own_key(skops, &k, 1);
	if (own_record(skops, &k, &copy))
		return;
	/* Only same-namespace pairs take the fast path: their handshake completes before connect()
	 * returns, so no byte can still be in flight on the normal path when redirection starts. */
	if (is_loopback(skops->remote_ip4) && sockmap_enabled())
		join_sockhash(skops);
}

static __always_inline void passive_established(struct bpf_sock_ops *skops)
{
	struct pair_key k;
	own_key(skops, &k, 0);
	/* The proxy accepted a connection the ingress program rewrote: from now on the record lives as
	 * long as this socket, out of reach of the handshake LRU. */
	struct orig_dst *syn = bpf_map_lookup_elem(&ingress_syn, &k);
	if (syn) {
		struct orig_dst copy = *syn;
		if (!own_record(skops, &k, &copy)) {
			bpf_map_delete_elem(&ingress_syn, &k);
			count(C_INGRESS_ADOPT);
		}
		return;
	}
	if (!is_loopback(skops->local_ip4) || !sockmap_enabled())
		return;
	if (!bpf_map_lookup_elem(&pair_orig_dst, &k))
		return;
	join_sockhash(skops);
}

static __always_inline void closed(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (sk) {
		struct pair_key *owned = bpf_sk_storage_get(&sock_pair, sk, 0, 0);
		if (owned) {
			struct pair_key k = *owned;
			pair_delete(&k);
			bpf_sk_storage_delete(&sock_pair, sk);
		}
	}
	struct pair_key k;
	local_key(skops, &k);
	if (!bpf_map_delete_elem(&sock_refs, &k))
		fill_add(T_SOCK_REFS, -1);
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
