// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect4 and cgroup/connect6: sends a meshed application's TCP connections to its proxy's
 * outbound port, the proxy's connections to same-node meshed pods (and to its own pod) to the inbound
 * port, and (DNS capture) UDP port 53 to the proxy's DNS port. The original destination is kept with
 * the socket; sockops turns it into a connection-keyed record once the 4-tuple exists. A TCP
 * connection that would need a record while the connection table is full fails here, at connect(),
 * rather than later without its record.
 *
 * The checks follow the order of the mesh's own iptables rules, so each decision is the one those
 * rules would make. connect6 handles IPv4 destinations written as ::ffff:a.b.c.d (dual-stack sockets,
 * the JDK's default) exactly like connect4: on the wire they are IPv4, and iptables sees them as such.
 * Native IPv6 destinations are left to the kernel untouched.
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
 * cookie (the daemon identifies every meshed pod's namespace so, and a restarting daemon keeps it);
 * 0 when unknown. */
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
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return -1;
	struct orig_dst *od = bpf_sk_storage_get(&sock_orig_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!od) {
		count(C_MAP_ERROR);
		return -1;
	}
	od->ip = ip;
	od->port = port;
	od->flags = flags;
	return 0;
}

static __always_inline void set_port(struct bpf_sock_addr *ctx, __u16 port)
{
	ctx->user_port = bpf_htons(port);
}

/* The proxy then sees the pod IP as the source, as it would with iptables REDIRECT. */
static __always_inline void bind_pod_ip(struct bpf_sock_addr *ctx, int v6, __u32 pod_ip)
{
	long err;
	if (v6) {
		struct sockaddr_in6 sa = {};
		sa.sin6_family = AF_INET6;
		sa.sin6_addr.in6_u.u6_addr32[2] = bpf_htonl(0xffff);
		sa.sin6_addr.in6_u.u6_addr32[3] = pod_ip;
		err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	} else {
		struct sockaddr_in sa = {};
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = pod_ip;
		err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	if (err)
		count(C_BIND_ERROR);
}

/* The address the socket was bound to before connect(), IPv4 network order; 0 when none. For an
 * AF_INET6 socket bound to ::ffff:a.b.c.d the kernel keeps a.b.c.d here too. */
static __always_inline __u32 bound_ip(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	return sk ? sk->src_ip4 : 0;
}

static __always_inline int proxy_uid(const struct mesh_config *cfg)
{
	return (__u32)bpf_get_current_uid_gid() == cfg->proxy_uid;
}

static __always_inline int is_proxy(const struct mesh_config *cfg)
{
	__u64 ug = bpf_get_current_uid_gid();
	return (__u32)ug == cfg->proxy_uid || (__u32)(ug >> 32) == cfg->proxy_gid;
}

static __always_inline int out_port_excluded(const struct pod_config *p, __u16 dport)
{
	return (p->flags & POD_F_EXCLUDE_OUT_PORTS_ALL) || port_in(p->exclude_out_ports, p->n_exclude_out_ports, dport);
}

/*
 * A destination reached over the pod's loopback interface: its own IP, or 127.0.0.0/8 other than
 * 127.0.0.1. The proxy calling one of these by its uid goes to its own inbound port (the way a
 * service whose endpoint is this very pod reaches the app through the inbound listeners), except on
 * the tunnel port and on the pod's excluded outbound ports, which iptables returns first. Everyone
 * else, and the proxy by group only, goes direct.
 */
static __always_inline int local_dst(struct bpf_sock_addr *ctx, struct mesh_config *cfg, struct event *ev,
				     int by_group)
{
	__u32 dip = ev->dip, pod_ip = ev->pod_ip;
	__u16 dport = ev->dport;
	ev->reason = R_PASS_LOCAL;
	if (!(cfg->flags & CFG_F_SELF_INBOUND) || !(by_group || proxy_uid(cfg)) || dip == bpf_htonl(LOCALHOST)) {
		if (!is_proxy(cfg))
			pod_count(pod_ip, PS_PASSED);
		return 1;
	}
	if (cfg->tunnel_port && dport == cfg->tunnel_port) {
		ev->reason = R_PASS_TUNNEL;
		return 1;
	}
	if (pod_ip) {
		struct pod_config *self = bpf_map_lookup_elem(&local_pods, &pod_ip);
		if (self && out_port_excluded(self, dport)) {
			ev->reason = R_PASS_EXCLUDED_PORT;
			count(C_CONNECT_POLICY_PASS);
			return 1;
		}
	}
	if (!conn_admitted(cfg)) {
		ev->reason = R_REFUSED_TABLE_FULL;
		return 0;
	}
	if (record(ctx, dip, dport, ORIG_F_INBOUND))
		return 1;
	set_port(ctx, cfg->inbound_port);
	count(C_CONNECT_INBOUND);
	pod_count(pod_ip, PS_INBOUND);
	ev->reason = R_INBOUND_SELF;
	return 1;
}

/* The proxy's own connection to another pod: left alone unless that pod is a meshed pod of this node,
 * whose inbound port then receives it as the target pod's own rules would have. */
static __always_inline int proxy_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, struct event *ev)
{
	__u32 dip = ev->dip;
	__u16 dport = ev->dport;
	ev->reason = R_PASS_PROXY;
	struct pod_config *target = bpf_map_lookup_elem(&local_pods, &dip);
	if (!target)
		return 1;
	enum event_reason why = inbound_rule(cfg, target, dport);
	if (why != R_IN_REWRITE) {
		ev->reason = why;
		return 1;
	}
	if (!conn_admitted(cfg)) {
		ev->reason = R_REFUSED_TABLE_FULL;
		return 0;
	}
	if (record(ctx, dip, dport, ORIG_F_INBOUND))
		return 1;
	set_port(ctx, cfg->inbound_port);
	count(C_CONNECT_INBOUND);
	pod_count(dip, PS_INBOUND);
	ev->reason = R_INBOUND_LOCAL_POD;
	return 1;
}

/* DNS over TCP goes to the proxy's DNS port too when capture is on and the proxy listens there. */
static __always_inline int is_dns_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, __u16 dport)
{
	return dport == 53 && (cfg->flags & CFG_F_DNS_CAPTURE) && cfg->dns_port && listening(ctx, cfg->dns_port);
}

static __always_inline int app_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, int v6, struct event *ev)
{
	__u32 dip = ev->dip, pod_ip = ev->pod_ip;
	__u16 dport = ev->dport;
	if (is_dns_tcp(ctx, cfg, dport)) {
		if (!conn_admitted(cfg)) {
			ev->reason = R_REFUSED_TABLE_FULL;
			return 0;
		}
		if (record(ctx, dip, dport, ORIG_F_DNS))
			return 1;
		set_sock_addr(ctx, v6, bpf_htonl(LOCALHOST), cfg->dns_port);
		count(C_DNS_REDIRECT);
		ev->reason = R_DNS_REDIRECT;
		return 1;
	}
	ev->reason = R_REDIRECT_UNKNOWN;
	if (pod_ip) {
		count(C_CONNECT_POD_KNOWN);
		struct pod_config *p = bpf_map_lookup_elem(&local_pods, &pod_ip);
		if (p) {
			ev->reason = outbound_rule(p, dip, dport);
			if (ev->reason != R_REDIRECT) {
				count(C_CONNECT_POLICY_PASS);
				pod_count(pod_ip, PS_PASSED);
				return 1;
			}
		}
	}
	if (!conn_admitted(cfg)) {
		ev->reason = R_REFUSED_TABLE_FULL;
		return 0;
	}
	if (record(ctx, dip, dport, ORIG_F_OUTBOUND))
		return 1;
	if (pod_ip)
		bind_pod_ip(ctx, v6, pod_ip);
	set_sock_addr(ctx, v6, bpf_htonl(LOCALHOST), cfg->outbound_port);
	count(C_CONNECT_REDIRECT);
	pod_count(pod_ip, PS_REDIRECTED);
	return 1;
}

static __always_inline void dns_udp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, int v6, __u32 dip)
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
	set_sock_addr(ctx, v6, bpf_htonl(LOCALHOST), cfg->dns_port);
	count(C_DNS_REDIRECT);
	struct event ev = {.kind = EV_DNS, .reason = R_DNS_REDIRECT, .dip = dip, .dport = 53};
	ev.netns = bpf_get_netns_cookie(ctx);
	ev.uid = (__u32)bpf_get_current_uid_gid();
	emit(&ev);
}

/* 1: the connect goes ahead (rewritten or not); 0: refused, the connection table is full. */
static __always_inline int tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, int v6, struct event *ev)
{
	/* A pod is in the mesh once its proxy listens; checking every time (no cache) means an app that
	 * connects before its proxy is up is not stuck with the answer. */
	if (!listening(ctx, cfg->outbound_port))
		return 1;
	ev->sip = bound_ip(ctx);
	if (ev->sip == bpf_htonl(INBOUND_PASSTHROUGH_SRC)) {
		count(C_CONNECT_PASSTHROUGH);
		ev->reason = R_PASS_PASSTHROUGH;
		return 1;
	}
	ev->pod_ip = current_pod_ip(ctx);
	if (is_loopback(ev->dip) || (ev->pod_ip && ev->dip == ev->pod_ip)) {
		struct pod_config *self = ev->pod_ip ? bpf_map_lookup_elem(&local_pods, &ev->pod_ip) : 0;
		if (self && (self->flags & POD_F_INCLUDE_OUT_LOOPBACK) && !proxy_uid(cfg) &&
		    ev->dip != bpf_htonl(LOCALHOST)) {
			/* No "loopback goes direct" rule: the proxy's group reaches the inbound port by the
			 * group rule, the app's connection follows the pod's rules like any other. */
			if (is_proxy(cfg))
				return local_dst(ctx, cfg, ev, 1);
			return app_tcp(ctx, cfg, v6, ev);
		}
		return local_dst(ctx, cfg, ev, 0);
	}
	if (is_proxy(cfg))
		return proxy_tcp(ctx, cfg, ev);
	return app_tcp(ctx, cfg, v6, ev);
}

static __always_inline int connect_any(struct bpf_sock_addr *ctx, int v6, __u32 dip, __u16 dport)
{
	struct mesh_config *cfg = get_config();
	if (!cfg)
		return 1;
	if (cfg->host_netns && bpf_get_netns_cookie(ctx) == cfg->host_netns) {
		count(C_CONNECT_HOST);
		return 1;
	}
	if (ctx->protocol == IPPROTO_TCP) {
		struct event ev = {.kind = EV_CONNECT, .dip = dip, .dport = dport};
		int allowed = tcp(ctx, cfg, v6, &ev);
		if (ev.reason) {
			ev.netns = bpf_get_netns_cookie(ctx);
			ev.uid = (__u32)bpf_get_current_uid_gid();
			emit(&ev);
		}
		return allowed;
	}
	if (ctx->protocol == IPPROTO_UDP && dport == 53 && !is_loopback(dip))
		dns_udp(ctx, cfg, v6, dip);
	return 1;
}

SEC("cgroup/connect4")
int mb_connect4(struct bpf_sock_addr *ctx)
{
	return connect_any(ctx, 0, ctx->user_ip4, bpf_ntohs((__u16)ctx->user_port));
}

SEC("cgroup/connect6")
int mb_connect6(struct bpf_sock_addr *ctx)
{
	if (!is_v4mapped(ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2]))
		return 1;
	return connect_any(ctx, 1, ctx->user_ip6[3], bpf_ntohs((__u16)ctx->user_port));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
