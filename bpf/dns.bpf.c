// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * DNS capture for unconnected UDP sockets: queries to port 53 go to the proxy's DNS port on loopback,
 * and replies read back from there carry the resolver's address again, so the application cannot tell.
 */
#include "common.h"
#include "maps.h"

SEC("cgroup/sendmsg4")
int mb_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct mesh_config *cfg = get_config();
	if (!cfg || !(cfg->flags & CFG_F_DNS_CAPTURE) || !cfg->dns_port)
		return 1;
	if (ctx->protocol != IPPROTO_UDP || bpf_ntohs((__u16)ctx->user_port) != 53 || is_loopback(ctx->user_ip4))
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
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst od = {.ip = ctx->user_ip4, .port = 53, .flags = ORIG_F_DNS};
	if (bpf_map_update_elem(&cookie_orig_dst, &cookie, &od, BPF_ANY)) {
		count(C_MAP_ERROR);
		return 1;
	}
	ctx->user_ip4 = bpf_htonl(LOCALHOST);
	ctx->user_port = bpf_htons(cfg->dns_port);
	count(C_DNS_REDIRECT);
	return 1;
}

SEC("cgroup/recvmsg4")
int mb_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct mesh_config *cfg = get_config();
	if (!cfg || !cfg->dns_port)
		return 1;
	if (ctx->user_ip4 != bpf_htonl(LOCALHOST) || bpf_ntohs((__u16)ctx->user_port) != cfg->dns_port)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst *od = bpf_map_lookup_elem(&cookie_orig_dst, &cookie);
	if (!od || !(od->flags & ORIG_F_DNS))
		return 1;
	ctx->user_ip4 = od->ip;
	ctx->user_port = bpf_htons(od->port);
	count(C_DNS_RESTORE);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
