// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/getsockopt: answers SO_ORIGINAL_DST for connections we redirected, on either end: at SOL_IP
 * with a sockaddr_in, and at SOL_IPV6 (IP6T_SO_ORIGINAL_DST) with the address written ::ffff:a.b.c.d,
 * for AF_INET sockets and for AF_INET6 ones carrying IPv4. Every other call is returned exactly as the
 * kernel answered it: optlen and retval are only written for the options we own.
 */
#include "common.h"
#include "maps.h"

/* An IPv4 connection: an AF_INET socket, or an AF_INET6 one whose peer is ::ffff:a.b.c.d. */
static __always_inline int carries_ipv4(struct bpf_sock *sk)
{
	if (sk->family == AF_INET)
		return 1;
	return sk->family == AF_INET6 && is_v4mapped(sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2]);
}

SEC("cgroup/getsockopt")
int mb_getsockopt(struct bpf_sockopt *ctx)
{
	int v6;
	if (ctx->level == SOL_IP && ctx->optname == SO_ORIGINAL_DST)
		v6 = 0;
	else if (ctx->level == SOL_IPV6 && ctx->optname == IP6T_SO_ORIGINAL_DST)
		v6 = 1;
	else
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->protocol != IPPROTO_TCP || !carries_ipv4(sk))
		return 1;
	__u32 lip = sk->src_ip4, rip = sk->dst_ip4;
	__u16 lport = (__u16)sk->src_port, rport = bpf_ntohs((__u16)sk->dst_port);
	__u64 ns = bpf_get_netns_cookie(ctx);

	/* Asked on the accepting end (the proxy): the initiator is the remote end. */
	struct pair_key k = {.sip = rip, .sport = rport, .dip = lip, .dport = lport};
	k.netns = pair_netns(rip, lip, ns);
	struct orig_dst *od = bpf_map_lookup_elem(&pair_orig_dst, &k);
	if (!od) {
		/* Asked on the initiating end. */
		k.sip = lip, k.sport = lport, k.dip = rip, k.dport = rport;
		k.netns = pair_netns(lip, rip, ns);
		od = bpf_map_lookup_elem(&pair_orig_dst, &k);
	}
	__u32 *pod = bpf_map_lookup_elem(&netns_pod_ips, &ns);
	struct event ev = {
		.kind = EV_ORIGDST,
		.netns = ns,
		.pod_ip = pod ? *pod : 0,
		.sip = rip,
		.dip = lip,
		.sport = rport,
		.dport = lport,
		.uid = (__u32)bpf_get_current_uid_gid(),
	};
	if (!od) {
		count(C_ORIGDST_MISS);
		pod_count(ev.pod_ip, PS_ORIGDST_MISS);
		ev.reason = R_ORIGDST_MISS;
		emit(&ev);
		return 1;
	}
	ev.reason = R_ORIGDST_HIT;
	ev.orig_ip = od->ip;
	ev.orig_port = od->port;
	if (v6) {
		struct sockaddr_in6 *sa6 = ctx->optval;
		if ((void *)(sa6 + 1) > ctx->optval_end)
			return 1;
		__builtin_memset(sa6, 0, sizeof(*sa6));
		sa6->sin6_family = AF_INET6;
		sa6->sin6_port = bpf_htons(od->port);
		sa6->sin6_addr.in6_u.u6_addr32[2] = bpf_htonl(0xffff);
		sa6->sin6_addr.in6_u.u6_addr32[3] = od->ip;
		ctx->optlen = sizeof(*sa6);
	} else {
		struct sockaddr_in *sa = ctx->optval;
		if ((void *)(sa + 1) > ctx->optval_end)
			return 1;
		__builtin_memset(sa, 0, sizeof(*sa));
		sa->sin_family = AF_INET;
		sa->sin_port = bpf_htons(od->port);
		sa->sin_addr.s_addr = od->ip;
		ctx->optlen = sizeof(*sa);
	}
	ctx->retval = 0;
	count(C_ORIGDST_HIT);
	emit(&ev);
	return 1;
}

/*
 * cgroup/getpeername4 and getpeername6: a redirected socket is connected to the proxy, but the
 * application asked for the original destination and, as with iptables REDIRECT, that is the peer it
 * should see.
 */
static __always_inline int restore_peer(struct bpf_sock_addr *ctx, int v6, struct orig_dst *od, __u16 wanted)
{
	/* Branches rather than a conditional pointer: the verifier refuses arithmetic on map pointers. */
	if (!od)
		return 1;
	if (!(od->flags & wanted))
		return 1;
	set_sock_addr(ctx, v6, od->ip, od->port);
	return 1;
}

static __always_inline int getpeername_any(struct bpf_sock_addr *ctx, int v6)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	if (v6 && !carries_ipv4(sk))
		return 1;
	if (sk->protocol != IPPROTO_UDP && sk->protocol != IPPROTO_TCP)
		return 1;
	/* Only sockets we redirected carry a record: an accepting proxy keeps seeing its real peer. */
	return restore_peer(ctx, v6, bpf_sk_storage_get(&sock_orig_dst, sk, 0, 0),
			    ORIG_F_OUTBOUND | ORIG_F_INBOUND | ORIG_F_DNS);
}

SEC("cgroup/getpeername4")
int mb_getpeername4(struct bpf_sock_addr *ctx)
{
	return getpeername_any(ctx, 0);
}

SEC("cgroup/getpeername6")
int mb_getpeername6(struct bpf_sock_addr *ctx)
{
	return getpeername_any(ctx, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
