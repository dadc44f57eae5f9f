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
 * Native IPv6 destinations follow the ip6tables rules Istio writes for dual stack: ::1 and ::6 stand
 * where IPv4 has 127.0.0.1 and 127.0.0.6 (IPv6 has no other loopback addresses), the pod's own IPv6
 * is its own IP, IPv6 ranges decide, and the proxy is reached at [::1] on its ports, only once it
 * listens there (a proxy listening on IPv4 only leaves IPv6 connections alone rather than break them).
 */
#include "common.h"
#include "maps.h"
#include "policy.h"

/* Finds a TCP listener on `port` in the caller's network namespace: one that takes IPv4 on loopback
 * (0.0.0.0, or [::] dual-stack), or with `six` one that takes [::1]. */
static __always_inline struct bpf_sock *find_listener(struct bpf_sock_addr *ctx, __u16 port, int six)
{
	struct bpf_sock_tuple t = {};
	if (six) {
		t.ipv6.daddr[3] = bpf_htonl(1);
		t.ipv6.dport = bpf_htons(port);
		return bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	t.ipv4.daddr = bpf_htonl(LOCALHOST);
	t.ipv4.dport = bpf_htons(port);
	return bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
}

static __always_inline int listening(struct bpf_sock_addr *ctx, __u16 port, int six)
{
	struct bpf_sock *sk = find_listener(ctx, port, six);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* The caller's pod, from its mark listener, else from its namespace cookie (the daemon identifies
 * every meshed pod's namespace so, and a restarting daemon keeps it); all zero when unknown. */
static __always_inline void current_pod(struct bpf_sock_addr *ctx, struct pod_ips *out)
{
	struct pod_ips *ips = 0;
	struct bpf_sock *sk = find_listener(ctx, MARK_PORT, 0);
	if (sk) {
		__u32 mark = sk->mark;
		bpf_sk_release(sk);
		ips = bpf_map_lookup_elem(&mark_pod_ips, &mark);
	}
	__u64 ns = bpf_get_netns_cookie(ctx);
	if (!ips) {
		ips = bpf_map_lookup_elem(&netns_pod_ips, &ns);
		if (ips)
			*out = *ips;
		return;
	}
	*out = *ips;
	/* The CNI's mark entry is written from the CNI result's IPv4; the pod's IPv6, from the pod
	 * source, is in the namespace's entry. */
	if (addr_zero(&out->ip6)) {
		struct pod_ips *byns = bpf_map_lookup_elem(&netns_pod_ips, &ns);
		if (byns && byns->ip4 == out->ip4)
			out->ip6 = byns->ip6;
	}
}

static __always_inline int record(struct bpf_sock_addr *ctx, const struct addr16 *ip, __u16 port, __u16 flags)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return -1;
	struct orig_dst *od = bpf_sk_storage_get(&sock_orig_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!od) {
		count(C_MAP_ERROR);
		return -1;
	}
	od->ip = *ip;
	od->port = port;
	od->flags = flags;
	return 0;
}

static __always_inline void set_port(struct bpf_sock_addr *ctx, __u16 port)
{
	ctx->user_port = bpf_htons(port);
}

/* The proxy then sees the pod IP as the source, as it would with iptables REDIRECT. `ip` is of the
 * destination's family. */
static __always_inline void bind_pod_ip(struct bpf_sock_addr *ctx, int v6, const struct addr16 *ip)
{
	long err;
	if (v6) {
		struct sockaddr_in6 sa = {};
		sa.sin6_family = AF_INET6;
		sa.sin6_addr.in6_u.u6_addr32[0] = ip->w[0];
		sa.sin6_addr.in6_u.u6_addr32[1] = ip->w[1];
		sa.sin6_addr.in6_u.u6_addr32[2] = ip->w[2];
		sa.sin6_addr.in6_u.u6_addr32[3] = ip->w[3];
		err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	} else {
		struct sockaddr_in sa = {};
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = ip->w[3];
		err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	if (err)
		count(C_BIND_ERROR);
}

/* The address the socket was bound to before connect(); all zero when none. An AF_INET6 socket bound
 * to ::ffff:a.b.c.d reads as that IPv4 address, as every map holds it. */
static __always_inline struct addr16 bound_ip(struct bpf_sock_addr *ctx, int v6)
{
	struct addr16 a = {};
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return a;
	if (!v6)
		return addr4(sk->src_ip4);
	a.w[0] = sk->src_ip6[0];
	a.w[1] = sk->src_ip6[1];
	a.w[2] = sk->src_ip6[2];
	a.w[3] = sk->src_ip6[3];
	return a;
}

/* 127.0.0.6 or ::6: the source the proxy binds when it forwards inbound connections. */
static __always_inline int is_passthrough(const struct addr16 *a)
{
	struct addr16 p4 = addr4(bpf_htonl(INBOUND_PASSTHROUGH_SRC)), p6 = addr6_low(6);
	return addr_eq(a, &p4) || addr_eq(a, &p6);
}

/* 127.0.0.1 or ::1, the one loopback address the proxy's own calls reach directly. */
static __always_inline int is_localhost(const struct addr16 *a)
{
	struct addr16 l4 = addr4(bpf_htonl(LOCALHOST)), l6 = addr6_low(1);
	return addr_eq(a, &l4) || addr_eq(a, &l6);
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

/* What a connect() decision needs besides the event: the caller's pod, and its IP in the
 * destination's family (all zero when it has none there). */
struct caller {
	struct pod_ips pod;
	struct addr16 self; /* the pod's own IP of the destination's family */
};

/*
 * A destination reached over the pod's loopback interface: its own IP, or 127.0.0.0/8 other than
 * 127.0.0.1 (IPv6 has ::1 only). The proxy calling one of these by its uid goes to its own inbound
 * port (the way a service whose endpoint is this very pod reaches the app through the inbound
 * listeners), except on the tunnel port and on the pod's excluded outbound ports, which iptables
 * returns first. Everyone else, and the proxy by group only, goes direct.
 */
static __always_inline int local_dst(struct bpf_sock_addr *ctx, struct mesh_config *cfg, struct event *ev,
				     int by_group)
{
	__u16 dport = ev->dport;
	ev->reason = R_PASS_LOCAL;
	if (!(cfg->flags & CFG_F_SELF_INBOUND) || !(by_group || proxy_uid(cfg)) || is_localhost(&ev->dip)) {
		if (!is_proxy(cfg))
			pod_count(&ev->pod_ip, PS_PASSED);
		return 1;
	}
	if (cfg->tunnel_port && dport == cfg->tunnel_port) {
		ev->reason = R_PASS_TUNNEL;
		return 1;
	}
	if (!addr_zero(&ev->pod_ip)) {
		struct pod_config *self = bpf_map_lookup_elem(&local_pods, &ev->pod_ip);
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
	if (record(ctx, &ev->dip, dport, ORIG_F_INBOUND))
		return 1;
	set_port(ctx, cfg->inbound_port);
	count(C_CONNECT_INBOUND);
	pod_count(&ev->pod_ip, PS_INBOUND);
	ev->reason = R_INBOUND_SELF;
	return 1;
}

/* The proxy's own connection to another pod: left alone unless that pod is a meshed pod of this node,
 * whose inbound port then receives it as the target pod's own rules would have. */
static __always_inline int proxy_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, struct event *ev)
{
	__u16 dport = ev->dport;
	ev->reason = R_PASS_PROXY;
	struct pod_config *target = bpf_map_lookup_elem(&local_pods, &ev->dip);
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
	if (record(ctx, &ev->dip, dport, ORIG_F_INBOUND))
		return 1;
	set_port(ctx, cfg->inbound_port);
	count(C_CONNECT_INBOUND);
	pod_count(&ev->dip, PS_INBOUND);
	ev->reason = R_INBOUND_LOCAL_POD;
	return 1;
}

/* DNS over TCP goes to the proxy's DNS port too when capture is on and the proxy listens there. */
static __always_inline int is_dns_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, __u16 dport, int six)
{
	return dport == 53 && (cfg->flags & CFG_F_DNS_CAPTURE) && cfg->dns_port && listening(ctx, cfg->dns_port, six);
}

static __always_inline int app_tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, int v6, struct caller *c,
				   struct event *ev)
{
	__u16 dport = ev->dport;
	int six = !addr_is4(&ev->dip);
	/* The proxy's loopback address of the destination's family: 127.0.0.1 or ::1. */
	struct addr16 lo = six ? addr6_low(1) : addr4(bpf_htonl(LOCALHOST));
	if (is_dns_tcp(ctx, cfg, dport, six)) {
		if (!conn_admitted(cfg)) {
			ev->reason = R_REFUSED_TABLE_FULL;
			return 0;
		}
		if (record(ctx, &ev->dip, dport, ORIG_F_DNS))
			return 1;
		set_sock_addr16(ctx, v6, &lo, cfg->dns_port);
		count(C_DNS_REDIRECT);
		ev->reason = R_DNS_REDIRECT;
		return 1;
	}
	ev->reason = R_REDIRECT_UNKNOWN;
	if (!addr_zero(&ev->pod_ip)) {
		count(C_CONNECT_POD_KNOWN);
		struct pod_config *p = bpf_map_lookup_elem(&local_pods, &ev->pod_ip);
		if (p) {
			ev->reason = outbound_rule(p, &ev->dip, dport);
			if (ev->reason != R_REDIRECT) {
				count(C_CONNECT_POLICY_PASS);
				pod_count(&ev->pod_ip, PS_PASSED);
				return 1;
			}
		}
	}
	if (!conn_admitted(cfg)) {
		ev->reason = R_REFUSED_TABLE_FULL;
		return 0;
	}
	if (record(ctx, &ev->dip, dport, ORIG_F_OUTBOUND))
		return 1;
	if (!addr_zero(&c->self))
		bind_pod_ip(ctx, v6, &c->self);
	set_sock_addr16(ctx, v6, &lo, cfg->outbound_port);
	count(C_CONNECT_REDIRECT);
	pod_count(&ev->pod_ip, PS_REDIRECTED);
	return 1;
}

static __always_inline void dns_udp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, int v6,
				    const struct addr16 *dip)
{
	if (!(cfg->flags & CFG_F_DNS_CAPTURE) || !cfg->dns_port || is_proxy(cfg))
		return;
	int six = !addr_is4(dip);
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	if (six) {
		t.ipv6.daddr[3] = bpf_htonl(1);
		t.ipv6.dport = bpf_htons(cfg->dns_port);
		sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	} else {
		t.ipv4.daddr = bpf_htonl(LOCALHOST);
		t.ipv4.dport = bpf_htons(cfg->dns_port);
		sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return;
	bpf_sk_release(sk);
	if (record(ctx, dip, 53, ORIG_F_DNS))
		return;
	struct addr16 lo = six ? addr6_low(1) : addr4(bpf_htonl(LOCALHOST));
	set_sock_addr16(ctx, v6, &lo, cfg->dns_port);
	count(C_DNS_REDIRECT);
	struct event ev = {.kind = EV_DNS, .reason = R_DNS_REDIRECT, .dip = *dip, .dport = 53};
	ev.netns = bpf_get_netns_cookie(ctx);
	ev.uid = (__u32)bpf_get_current_uid_gid();
	emit(&ev);
}

/* 1: the connect goes ahead (rewritten or not); 0: refused, the connection table is full. */
static __always_inline int tcp(struct bpf_sock_addr *ctx, struct mesh_config *cfg, int v6, struct event *ev)
{
	int six = !addr_is4(&ev->dip);
	/* A pod is in the mesh once its proxy listens (for IPv6 destinations: takes IPv6 on [::1]);
	 * checking every time (no cache) means an app that connects before its proxy is up is not stuck
	 * with the answer. */
	if (!listening(ctx, cfg->outbound_port, six))
		return 1;
	ev->sip = bound_ip(ctx, v6);
	if (is_passthrough(&ev->sip)) {
		count(C_CONNECT_PASSTHROUGH);
		ev->reason = R_PASS_PASSTHROUGH;
		return 1;
	}
	struct caller c = {};
	current_pod(ctx, &c.pod);
	if (six)
		c.self = c.pod.ip6;
	else if (c.pod.ip4)
		c.self = addr4(c.pod.ip4);
	/* The pod's key in local_pods and pod_counters: its IPv4 when it has one. */
	if (c.pod.ip4)
		ev->pod_ip = addr4(c.pod.ip4);
	else
		ev->pod_ip = c.pod.ip6;
	if (addr_loopback(&ev->dip) || (!addr_zero(&c.self) && addr_eq(&ev->dip, &c.self))) {
		struct pod_config *self = addr_zero(&ev->pod_ip) ? 0 : bpf_map_lookup_elem(&local_pods, &ev->pod_ip);
		/* The flag is of the IPv4 ranges: ip6tables keeps its loopback rules (IPv6 has no loopback
		 * range to include but ::1, which never matters here). */
		if (!six && self && (self->flags & POD_F_INCLUDE_OUT_LOOPBACK) && !proxy_uid(cfg) &&
		    !is_localhost(&ev->dip)) {
			/* No "loopback goes direct" rule: the proxy's group reaches the inbound port by the
			 * group rule, the app's connection follows the pod's rules like any other. */
			if (is_proxy(cfg))
				return local_dst(ctx, cfg, ev, 1);
			return app_tcp(ctx, cfg, v6, &c, ev);
		}
		return local_dst(ctx, cfg, ev, 0);
	}
	if (is_proxy(cfg))
		return proxy_tcp(ctx, cfg, ev);
	return app_tcp(ctx, cfg, v6, &c, ev);
}

static __always_inline int connect_any(struct bpf_sock_addr *ctx, int v6, const struct addr16 *dip, __u16 dport)
{
	struct mesh_config *cfg = get_config();
	if (!cfg)
		return 1;
	if (cfg->host_netns && bpf_get_netns_cookie(ctx) == cfg->host_netns) {
		count(C_CONNECT_HOST);
		return 1;
	}
	if (ctx->protocol == IPPROTO_TCP) {
		struct event ev = {.kind = EV_CONNECT, .dip = *dip, .dport = dport};
		int allowed = tcp(ctx, cfg, v6, &ev);
		if (ev.reason) {
			ev.netns = bpf_get_netns_cookie(ctx);
			ev.uid = (__u32)bpf_get_current_uid_gid();
			emit(&ev);
		}
		return allowed;
	}
	if (ctx->protocol == IPPROTO_UDP && dport == 53 && !addr_loopback(dip))
		dns_udp(ctx, cfg, v6, dip);
	return 1;
}

SEC("cgroup/connect4")
int mb_connect4(struct bpf_sock_addr *ctx)
{
	struct addr16 dip = addr4(ctx->user_ip4);
	return connect_any(ctx, 0, &dip, bpf_ntohs((__u16)ctx->user_port));
}

SEC("cgroup/connect6")
int mb_connect6(struct bpf_sock_addr *ctx)
{
	struct addr16 dip = {.w = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]}};
	return connect_any(ctx, 1, &dip, bpf_ntohs((__u16)ctx->user_port));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
