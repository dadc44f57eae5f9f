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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
