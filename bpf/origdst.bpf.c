// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/getsockopt: answers getsockopt(SOL_IP, SO_ORIGINAL_DST) for connections we redirected, on
 * either end. Every other call is returned exactly as the kernel answered it: optlen and retval are
 * only written for the one option we own.
 */
#include "common.h"
#include "maps.h"

SEC("cgroup/getsockopt")
int mb_getsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->family != AF_INET || sk->protocol != IPPROTO_TCP)
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
	if (!od) {
		count(C_ORIGDST_MISS);
		return 1;
	}
	struct sockaddr_in *sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->sin_family = AF_INET;
	sa->sin_port = bpf_htons(od->port);
	sa->sin_addr.s_addr = od->ip;
	ctx->optlen = sizeof(*sa);
	ctx->retval = 0;
	count(C_ORIGDST_HIT);
	return 1;
}

/*
 * cgroup/getpeername4: a redirected socket is connected to the proxy, but the application asked for
 * the original destination and, as with iptables REDIRECT, that is the peer it should see.
 */
static __always_inline int restore_peer(struct bpf_sock_addr *ctx, struct orig_dst *od, __u16 wanted)
{
	/* Branches rather than a conditional pointer: the verifier refuses arithmetic on map pointers. */
	if (!od)
		return 1;
	if (!(od->flags & wanted))
		return 1;
	ctx->user_ip4 = od->ip;
	ctx->user_port = bpf_htons(od->port);
	return 1;
}

SEC("cgroup/getpeername4")
int mb_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	if (sk->protocol == IPPROTO_UDP) {
		__u64 cookie = bpf_get_socket_cookie(ctx);
		return restore_peer(ctx, bpf_map_lookup_elem(&cookie_orig_dst, &cookie), ORIG_F_DNS);
	}
	if (sk->protocol != IPPROTO_TCP)
		return 1;
	__u32 lip = sk->src_ip4, rip = sk->dst_ip4;
	struct pair_key k = {
		.sip = lip,
		.sport = (__u16)sk->src_port,
		.dip = rip,
		.dport = bpf_ntohs((__u16)sk->dst_port),
	};
	k.netns = pair_netns(lip, rip, bpf_get_netns_cookie(ctx));
	/* Only the initiating end's records: an accepting proxy keeps seeing its real peer. */
	return restore_peer(ctx, bpf_map_lookup_elem(&pair_orig_dst, &k), ORIG_F_OUTBOUND | ORIG_F_INBOUND | ORIG_F_DNS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
