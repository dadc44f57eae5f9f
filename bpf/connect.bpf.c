// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect4: sends a meshed application's TCP connections to its proxy's outbound port, the
 * proxy's connections to same-node meshed pods to their inbound port, and (DNS capture) UDP port 53 to
 * the proxy's DNS port. The original destination is recorded under the socket cookie; sockops turns it
 * into a connection-keyed record once the 4-tuple exists.
 */
#include "common.h"
#include "maps.h"
#include "policy.h"

/* Finds a listening socket on `port` in the caller's network namespace. */
static __always_inline struct bpf_sock *find_listener(struct bpf_sock_addr *ctx, __u16 port)
{
	struct bpf_sock_tuple t = {};
	t.ipv4.daddr = bpf_htonl(LOCALHOST);
	t.ipv4.dport = bpf_htons(port);
	return bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
}

static __always_inline int listening(struct bpf_sock_addr *ctx, __u16 port)
{
	struct bpf_sock *sk = find_listener(ctx, port);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* The pod IP (network order) of the caller's pod, from its mark listener, else from its namespace
 * cookie (while a restarting daemon reopens the listeners); 0 when unknown. */
static __always_inline __u32 current_pod_ip(struct bpf_sock_addr *ctx)
{
	__u32 *ip = 0;
	struct bpf_sock *sk = find_listener(ctx, MARK_PORT);
	if (sk) {
		__u32 mark = sk->mark;
		bpf_sk_release(sk);
		ip = bpf_map_lookup_elem(&mark_pod_ips, &mark);
	}
	if (!ip) {
		__u64 ns = bpf_get_netns_cookie(ctx);
		ip = bpf_map_lookup_elem(&netns_pod_ips, &ns);
	}
	return ip ? *ip : 0;
}

static __always_inline int record(struct bpf_sock_addr *ctx, __u32 ip, __u16 port, __u16 flags)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst od = {.ip = ip, .port = port, .flags = flags};
	if (bpf_map_update_elem(&cookie_orig_dst, &cookie, &od, BPF_ANY)) {
		count(C_MAP_ERROR);
		return -1;
	}
	return 0;
}

static __always_inline int is_proxy(const struct mesh_config *cfg)
{
	__u64 ug = bpf_get_current_uid_gid();
	return (__u32)ug == cfg->proxy_uid || (__u32)(ug >> 32) == cfg->proxy_gid;
}

/* The proxy's own connection: left alone unless it goes to a meshed pod of this node (itself
 * included), whose inbound port then receives it as the target pod's own rules would have. */
static __always_inline void proxy_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, __u32 dip, __u16 dport)
{
	struct pod_config *target = bpf_map_lookup_elem(&local_pods, &dip);
	if (!target || !inbound_redirect(cfg, target, dport))
		return;
	if (record(ctx, dip, dport, ORIG_F_INBOUND))
		return;
	ctx->user_port = bpf_htons(cfg->inbound_port);
	count(C_CONNECT_INBOUND);
}

/* DNS over TCP goes to the proxy's DNS port too when capture is on and the proxy listens there. */
static __always_inline int dns_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, __u32 dip, __u16 dport)
{
	if (dport != 53 || !(cfg->flags & CFG_F_DNS_CAPTURE) || !cfg->dns_port || !listening(ctx, cfg->dns_port))
		return 0;
	if (record(ctx, dip, dport, ORIG_F_DNS))
		return 0;
	ctx->user_ip4 = bpf_htonl(LOCALHOST);
	ctx->user_port = bpf_htons(cfg->dns_port);
	count(C_DNS_REDIRECT);
	return 1;
}

static __always_inline void app_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, __u32 dip, __u16 dport)
{
	/* A pod is in the mesh once its proxy listens; checking every time (no cache) means an app
	 * that connects before its proxy is up is not stuck with the answer. */
	if (!listening(ctx, cfg->outbound_port))
		return;
	if (dns_tcp(ctx, cfg, dip, dport))
		return;
	__u32 pod_ip = current_pod_ip(ctx);
	if (pod_ip) {
		count(C_CONNECT_POD_KNOWN);
		if (dip == pod_ip)
			return;
		struct pod_config *p = bpf_map_lookup_elem(&local_pods, &pod_ip);
		if (p && !outbound_redirect(p, dip, dport)) {
			count(C_CONNECT_POLICY_PASS);
			return;
		}
	}
	if (record(ctx, dip, dport, ORIG_F_OUTBOUND))
		return;
	if (pod_ip) {
		/* The proxy then sees the pod IP as the source, as it would with iptables REDIRECT. */
		struct sockaddr_in sa = {};
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = pod_ip;
		if (bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa)))
			count(C_BIND_ERROR);
	}
	ctx->user_ip4 = bpf_htonl(LOCALHOST);
	ctx->user_port = bpf_htons(cfg->outbound_port);
	count(C_CONNECT_REDIRECT);
}

static __always_inline void dns_udp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, __u32 dip)
{
	if (!(cfg->flags & CFG_F_DNS_CAPTURE) || !cfg->dns_port || is_proxy(cfg))
		return;
	struct bpf_sock_tuple t = {};
	t.ipv4.daddr = bpf_htonl(LOCALHOST);
	t.ipv4.dport = bpf_htons(cfg->dns_port);
	struct bpf_sock *sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return;
	bpf_sk_release(sk);
	if (record(ctx, dip, 53, ORIG_F_DNS))
		return;
	ctx->user_ip4 = bpf_htonl(LOCALHOST);
	ctx->user_port = bpf_htons(cfg->dns_port);
	count(C_DNS_REDIRECT);
}

SEC("cgroup/connect4")
int mb_connect4(struct bpf_sock_addr *ctx)
{
	struct mesh_config *cfg = get_config();
	if (!cfg)
		return 1;
	__u32 dip = ctx->user_ip4;
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	if (is_loopback(dip))
		return 1;
	if (ctx->protocol == IPPROTO_TCP) {
		if (is_proxy(cfg))
			proxy_tcp(ctx, cfg, dip, dport);
		else
			app_tcp(ctx, cfg, dip, dport);
	} else if (ctx->protocol == IPPROTO_UDP && dport == 53) {
		dns_udp(ctx, cfg, dip);
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
