// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * DNS capture for unconnected UDP sockets: queries to port 53 go to the proxy's DNS port on loopback,
 * and replies read back from there carry the resolver's address again, so the application cannot tell.
 * The *6 programs do the same for AF_INET6 sockets: an IPv4 resolver written ::ffff:a.b.c.d goes to
 * 127.0.0.1 as from an AF_INET socket, an IPv6 resolver to [::1] (when the proxy's DNS listener takes
 * IPv6 there).
 */
#include "common.h"
#include "maps.h"

/* A UDP listener of the proxy's DNS port on loopback, of the resolver's family. */
static __always_inline int dns_listening(struct bpf_sock_addr *ctx, __u16 port, int six)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	if (six) {
		t.ipv6.daddr[3] = bpf_htonl(1);
		t.ipv6.dport = bpf_htons(port);
		sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	} else {
		t.ipv4.daddr = bpf_htonl(LOCALHOST);
		t.ipv4.dport = bpf_htons(port);
		sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

static __always_inline int sendmsg_any(struct bpf_sock_addr *ctx, int v6, const struct addr16 *dip)
{
	struct mesh_config *cfg = get_config();
	if (!cfg || !(cfg->flags & CFG_F_DNS_CAPTURE) || !cfg->dns_port)
		return 1;
	if (ctx->protocol != IPPROTO_UDP || bpf_ntohs((__u16)ctx->user_port) != 53 || addr_loopback(dip))
		return 1;
	if (cfg->host_netns && bpf_get_netns_cookie(ctx) == cfg->host_netns)
		return 1;
	__u64 ug = bpf_get_current_uid_gid();
	if ((__u32)ug == cfg->proxy_uid || (__u32)(ug >> 32) == cfg->proxy_gid)
		return 1;
	int six = !addr_is4(dip);
	if (!dns_listening(ctx, cfg->dns_port, six))
		return 1;
	struct bpf_sock *s = ctx->sk;
	if (!s)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&sock_orig_dst, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!od) {
		count(C_MAP_ERROR);
		return 1;
	}
	od->ip = *dip;
	od->port = 53;
	od->flags = ORIG_F_DNS;
	struct addr16 lo = six ? addr6_low(1) : addr4(bpf_htonl(LOCALHOST));
	set_sock_addr16(ctx, v6, &lo, cfg->dns_port);
	count(C_DNS_REDIRECT);
	struct event ev = {.kind = EV_DNS, .reason = R_DNS_REDIRECT, .dip = *dip, .dport = 53};
	ev.netns = bpf_get_netns_cookie(ctx);
	ev.uid = (__u32)ug;
	emit(&ev);
	return 1;
}

/* A reply read back from the proxy's DNS port on loopback (127.0.0.1, or ::1) gets the resolver's
 * address again. */
static __always_inline int recvmsg_any(struct bpf_sock_addr *ctx, int v6, const struct addr16 *sip)
{
	struct mesh_config *cfg = get_config();
	if (!cfg || !cfg->dns_port)
		return 1;
	struct addr16 l4 = addr4(bpf_htonl(LOCALHOST)), l6 = addr6_low(1);
	if ((!addr_eq(sip, &l4) && !addr_eq(sip, &l6)) || bpf_ntohs((__u16)ctx->user_port) != cfg->dns_port)
		return 1;
	struct bpf_sock *s = ctx->sk;
	if (!s)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&sock_orig_dst, s, 0, 0);
	if (!od || !(od->flags & ORIG_F_DNS))
		return 1;
	/* An AF_INET socket can only have asked an IPv4 resolver. */
	set_sock_addr16(ctx, v6, &od->ip, od->port);
	count(C_DNS_RESTORE);
	return 1;
}

static __always_inline struct addr16 user_addr6(struct bpf_sock_addr *ctx)
{
	struct addr16 a = {.w = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]}};
	return a;
}

SEC("cgroup/sendmsg4")
int mb_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct addr16 a = addr4(ctx->user_ip4);
	return sendmsg_any(ctx, 0, &a);
}

SEC("cgroup/sendmsg6")
int mb_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct addr16 a = user_addr6(ctx);
	return sendmsg_any(ctx, 1, &a);
}

SEC("cgroup/recvmsg4")
int mb_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct addr16 a = addr4(ctx->user_ip4);
	return recvmsg_any(ctx, 0, &a);
}

SEC("cgroup/recvmsg6")
int mb_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct addr16 a = user_addr6(ctx);
	return recvmsg_any(ctx, 1, &a);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
