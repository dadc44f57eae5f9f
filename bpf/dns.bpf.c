// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * DNS capture for unconnected UDP sockets: queries to port 53 go to the proxy's DNS port on loopback,
 * and replies read back from there carry the resolver's address again, so the application cannot tell.
 * The *6 programs do the same for AF_INET6 sockets sending to an IPv4 resolver as ::ffff:a.b.c.d;
 * native IPv6 resolvers are left alone.
 */
#include "common.h"
#include "maps.h"

static __always_inline int sendmsg_any(struct bpf_sock_addr *ctx, int v6, __u32 dip)
{
	struct mesh_config *cfg = get_config();
	if (!cfg || !(cfg->flags & CFG_F_DNS_CAPTURE) || !cfg->dns_port)
		return 1;
	if (ctx->protocol != IPPROTO_UDP || bpf_ntohs((__u16)ctx->user_port) != 53 || is_loopback(dip))
		return 1;
	if (cfg->host_netns && bpf_get_netns_cookie(ctx) == cfg->host_netns)
		return 1;
	__u64 ug = bpf_get_current_uid_gid();
	if ((__u32)ug == cfg->proxy_uid || (__u32)(ug >> 32) == cfg->proxy_gid)
		return 1;
	struct bpf_sock_tuple t = {};
	t.ipv4.daddr = bpf_htonl(LOCALHOST);
	t.ipv4.dport = bpf_htons(cfg->dns_port);
	struct bpf_sock *sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 1;
	bpf_sk_release(sk);
	struct bpf_sock *s = ctx->sk;
	if (!s)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&sock_orig_dst, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!od) {
		count(C_MAP_ERROR);
		return 1;
	}
	od->ip = dip;
	od->port = 53;
	od->flags = ORIG_F_DNS;
	set_sock_addr(ctx, v6, bpf_htonl(LOCALHOST), cfg->dns_port);
	count(C_DNS_REDIRECT);
	struct event ev = {.kind = EV_DNS, .reason = R_DNS_REDIRECT, .dip = dip, .dport = 53};
	ev.netns = bpf_get_netns_cookie(ctx);
	ev.uid = (__u32)ug;
	emit(&ev);
	return 1;
}

static __always_inline int recvmsg_any(struct bpf_sock_addr *ctx, int v6, __u32 sip)
{
	struct mesh_config *cfg = get_config();
	if (!cfg || !cfg->dns_port)
		return 1;
	if (sip != bpf_htonl(LOCALHOST) || bpf_ntohs((__u16)ctx->user_port) != cfg->dns_port)
		return 1;
	struct bpf_sock *s = ctx->sk;
	if (!s)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&sock_orig_dst, s, 0, 0);
	if (!od || !(od->flags & ORIG_F_DNS))
		return 1;
	set_sock_addr(ctx, v6, od->ip, od->port);
	count(C_DNS_RESTORE);
	return 1;
}

SEC("cgroup/sendmsg4")
int mb_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sendmsg_any(ctx, 0, ctx->user_ip4);
}

SEC("cgroup/sendmsg6")
int mb_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (!is_v4mapped(ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2]))
		return 1;
	return sendmsg_any(ctx, 1, ctx->user_ip6[3]);
}

SEC("cgroup/recvmsg4")
int mb_recvmsg4(struct bpf_sock_addr *ctx)
{
	return recvmsg_any(ctx, 0, ctx->user_ip4);
}

SEC("cgroup/recvmsg6")
int mb_recvmsg6(struct bpf_sock_addr *ctx)
{
	if (!is_v4mapped(ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2]))
		return 1;
	return recvmsg_any(ctx, 1, ctx->user_ip6[3]);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
