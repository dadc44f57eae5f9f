/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Layouts and constants shared by every program and by the agent. The agent's TypeScript side
 * (src/generated/bpf_types.ts) is generated from the compiled objects' BTF by `deno task gen`, which
 * bpf/build.sh runs: constants the agent needs are enums rather than #defines, since only types reach
 * BTF, and struct agent_types below keeps the enums no map key or value carries.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Not in vmlinux.h (they are macros in the uapi headers). */
#define AF_INET 2
#define AF_INET6 10
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80
#define IP6T_SO_ORIGINAL_DST 80
#define ETH_P_IP 0x0800
#define TC_ACT_OK 0

/* IPv4 addresses the decisions turn on, host order. */
enum ipv4_addrs {
	LOOPBACK_NET = 0x7f000000, /* 127.0.0.0/8 */
	LOCALHOST = 0x7f000001,    /* 127.0.0.1 */
	/* The source Envoy binds when it forwards an inbound connection to the app (or a rewritten
	 * probe): such a connection must never be captured again, whoever makes it. */
	INBOUND_PASSTHROUGH_SRC = 0x7f000006, /* 127.0.0.6 */
};
/* Their IPv6 counterparts, ::1 and ::6, are written out where used (last word, network order). */

enum ports {
	/* The per-pod identity listener: its SO_MARK is the key into mark_pod_ips. */
	MARK_PORT = 39807,
};

/* Capacities of the lists in struct mesh_config and struct pod_config. */
enum limits {
	MAX_PORT_RANGES = 32,
	MAX_CIDRS = 16, /* per family */
	MAX_ALWAYS_EXCLUDED = 8,
};

/* struct mesh_config.flags */
enum cfg_flags {
	CFG_F_DNS_CAPTURE = 1 << 0,
	CFG_F_CNI_MODE = 1 << 1,
	CFG_F_SOCKMAP = 1 << 2, /* the sk_msg fast path for loopback pairs */
	/* The proxy (by uid) calling its own pod, or loopback other than 127.0.0.1, goes to its inbound
	 * port: Istio, Kuma and OSM do this; Linkerd lets it through. */
	CFG_F_SELF_INBOUND = 1 << 3,
};

/* Mesh-wide parameters, written once by the agent at start (array map, key 0). */
struct mesh_config {
	__u16 outbound_port;
	__u16 inbound_port;
	__u16 dns_port;
	__u16 flags;
	__u32 proxy_uid;
	__u32 proxy_gid;
	__u16 always_excluded_inbound[MAX_ALWAYS_EXCLUDED];
	__u8 n_always_excluded;
	__u8 pad;
	/* The proxy calling its own pod on this port is left alone (Istio's HBONE 15008); 0: none. */
	__u16 tunnel_port;
	__u32 pad2;
	/* Cookie of the node's own network namespace: host processes and hostNetwork pods are never
	 * captured, whatever listens there. 0: unknown (the agent has not said). */
	__u64 host_netns;
	/* New connections are refused (connect() fails, inbound SYNs are dropped) while pair_orig_dst
	 * holds this many entries; 0: no limit. */
	__u32 conn_admit;
	__u32 pad3;
};

/* struct pod_config.flags: a list given as "*" */
enum pod_flags {
	POD_F_INCLUDE_OUT_PORTS_ALL = 1 << 0,
	POD_F_EXCLUDE_OUT_PORTS_ALL = 1 << 1,
	POD_F_INCLUDE_IN_PORTS_ALL = 1 << 2,
	POD_F_EXCLUDE_IN_PORTS_ALL = 1 << 3,
	POD_F_INCLUDE_OUT_CIDRS_ALL = 1 << 4,
	POD_F_EXCLUDE_OUT_CIDRS_ALL = 1 << 5,
	/* An included outbound range is a loopback one: istio-iptables then drops its "the app on
	 * loopback goes direct" rules, so the app's loopback traffic follows the pod's rules like any
	 * other. */
	POD_F_INCLUDE_OUT_LOOPBACK = 1 << 6,
};

/*
 * An address of either family as every map holds it: 16 bytes, network order, an IPv4 address written
 * ::ffff:a.b.c.d. One key type for both families, so a pod is found by any of its IPs, and an
 * AF_INET6 socket talking to an IPv4 peer meets the same records as an AF_INET one.
 */
struct addr16 {
	__u32 w[4];
};

/* An IPv4 network; both fields in network byte order, addr already masked. */
struct cidr4 {
	__be32 addr;
	__be32 mask;
};

/* An IPv6 network; network byte order, addr already masked. */
struct cidr6 {
	struct addr16 addr;
	struct addr16 mask;
};

/*
 * An inclusive port range, host order; a single port is lo == hi. Lists hold ranges rather than ports
 * so that Linkerd's "8000-9000" costs one entry instead of a thousand.
 */
struct port_range {
	__u16 lo;
	__u16 hi;
};

/*
 * Per-pod interception policy, keyed in local_pods by each of the pod's IPs (struct addr16). The
 * n_*_ports counts are numbers of ranges; the agent writes each list sorted, merged and without
 * overlaps. Address ranges are kept per family: an IPv4 destination is matched against the cidr4
 * lists, an IPv6 one against the cidr6 lists ("*" covers both).
 */
struct pod_config {
	__u32 flags;
	__u16 status_port;
	__u8 n_include_out_ports;
	__u8 n_exclude_out_ports;
	__u8 n_include_in_ports;
	__u8 n_exclude_in_ports;
	__u8 n_include_out_cidrs;
	__u8 n_exclude_out_cidrs;
	__u8 n_include_out_cidrs6;
	__u8 n_exclude_out_cidrs6;
	struct port_range include_out_ports[MAX_PORT_RANGES];
	struct port_range exclude_out_ports[MAX_PORT_RANGES];
	struct port_range include_in_ports[MAX_PORT_RANGES];
	struct port_range exclude_in_ports[MAX_PORT_RANGES];
	struct cidr4 include_out_cidrs[MAX_CIDRS];
	struct cidr4 exclude_out_cidrs[MAX_CIDRS];
	struct cidr6 include_out_cidrs6[MAX_CIDRS];
	struct cidr6 exclude_out_cidrs6[MAX_CIDRS];
};

/* Who a pod is (mark_pod_ips, netns_pod_ips): its IPv4 (network order, 0 if none) and its IPv6 (all
 * zero if none). */
struct pod_ips {
	__be32 ip4;
	struct addr16 ip6;
};

/* struct orig_dst.flags: who recorded it */
enum orig_flags {
	ORIG_F_OUTBOUND = 1 << 0, /* app -> outbound port */
	ORIG_F_INBOUND = 1 << 1,  /* proxy -> same-node pod's inbound port */
	ORIG_F_INGRESS = 1 << 2,  /* XDP/TC ingress rewrite; replies get their source port back */
	ORIG_F_DNS = 1 << 3,      /* UDP 53 -> DNS port */
};

/* An original destination: ip network order, port host order. */
struct orig_dst {
	struct addr16 ip;
	__u16 port;
	__u16 flags;
};

/*
 * A TCP connection seen from its initiator: s = initiator, d = acceptor. IPs network order, ports host
 * order. netns is the network namespace cookie when both addresses are loopback (the same 4-tuple then
 * exists in every pod) and 0 otherwise (pod IPs are unique on the node, so both ends compute the key
 * alike even in different namespaces).
 */
struct pair_key {
	__u64 netns;
	struct addr16 sip;
	struct addr16 dip;
	__u16 sport;
	__u16 dport;
	__u32 pad;
};

/*
 * Where a fast-path socket lives, so the sk_msg program can look at its peer's receive queue: sk_msg
 * programs may not take (and so not release) a socket reference. The cookie tells a live socket from
 * memory reused after it was freed.
 */
struct sock_ref {
	__u64 addr;
	__u64 cookie;
};

/* Indexes into the per-CPU counters map (the agent names each after its enumerator). */
enum counter {
	C_CONNECT_REDIRECT = 0, /* app connect sent to the outbound port */
	C_CONNECT_INBOUND,      /* proxy connect to a same-node pod sent to its inbound port */
	C_CONNECT_POLICY_PASS,  /* in mesh, but the pod's policy left it alone */
	C_CONNECT_POD_KNOWN,    /* the pod was identified by its mark listener */
	C_BIND_ERROR,           /* bpf_bind to the pod IP failed */
	C_SOCKMAP_ADD,          /* sockets put in the sockhash */
	C_SOCKMAP_ERROR,        /* sockhash updates that failed */
	C_MSG_REDIRECT,         /* sk_msg redirects that succeeded */
	C_MSG_FALLBACK,         /* sk_msg redirects that failed and fell back to the normal path */
	C_ORIGDST_HIT,          /* SO_ORIGINAL_DST answered */
	C_ORIGDST_MISS,         /* SO_ORIGINAL_DST asked, nothing recorded */
	C_DNS_REDIRECT,         /* UDP 53 sent to the DNS port */
	C_DNS_RESTORE,          /* DNS reply source restored */
	C_INGRESS_REDIRECT,     /* inbound packets rewritten to the inbound port */
	C_INGRESS_PASS,         /* inbound packets to a pod left alone by its policy */
	C_EGRESS_RESTORE,       /* reply packets given their original source port back */
	C_MAP_ERROR,            /* other map updates that failed */
	C_MSG_BACKLOG,          /* sk_msg found the peer's queue over its receive buffer: normal path from now on */
	C_MSG_SLOW_PATH,        /* sk_msg sends on a socket already moved to the normal path */
	C_CONNECT_PASSTHROUGH,  /* a socket bound to 127.0.0.6 (the proxy's inbound passthrough) left alone */
	C_CONNECT_HOST,         /* a connect in the node's own network namespace left alone */
	C_TABLE_FULL,           /* a new connection refused: the connection table had no room */
	C_INGRESS_ADOPT,        /* an inbound handshake's record moved to the connection table */
	C_INGRESS_UNTRACKED,    /* an inbound packet to an intercepted port of a flow with no record */
	C_INGRESS_ABORT,        /* an inbound handshake's record dropped on RST */
	C_EVENTS_LOST,          /* monitor events that did not fit in the ring buffer */
	C_INGRESS_COLLISION,    /* an inbound SYN refused (RST): its rewritten 4-tuple is another connection's */
	C_MAX,
};

/*
 * What the programs tell `merbridge monitor`, one event per decision, only while a monitor holds the
 * lease (monitor_lease): nobody listening costs one array lookup and a clock read per decision.
 */
enum event_kind {
	EV_CONNECT = 1, /* connect(): redirected, sent inbound, refused or left alone */
	EV_INGRESS,     /* an inbound SYN on a pod's interface: rewritten, left alone or dropped */
	EV_ORIGDST,     /* SO_ORIGINAL_DST answered or missed */
	EV_FASTPATH,    /* a socket joined the sockmap fast path, or left it */
	EV_DNS,         /* a UDP DNS query sent to the proxy's DNS port */
};

/* Why: the rule that decided (src/monitor/events.ts words each). */
enum event_reason {
	R_REDIRECT = 1,        /* to the outbound port: the pod's rules include it */
	R_REDIRECT_UNKNOWN,    /* to the outbound port: the pod is not identified, its rules unknown */
	R_INBOUND_SELF,        /* the proxy calling its own pod: to its inbound port */
	R_INBOUND_LOCAL_POD,   /* the proxy calling a meshed pod of this node: to that pod's inbound port */
	R_PASS_PASSTHROUGH,    /* bound to 127.0.0.6 */
	R_PASS_LOCAL,          /* loopback or the pod's own IP, reached directly */
	R_PASS_TUNNEL,         /* the proxy calling its own pod on the tunnel port */
	R_PASS_PROXY,          /* the proxy's own connection */
	R_PASS_EXCLUDED_PORT,  /* excluded outbound port */
	R_PASS_EXCLUDED_CIDR,  /* excluded outbound range */
	R_PASS_NOT_INCLUDED,   /* neither the port nor the address is included */
	R_REFUSED_TABLE_FULL,  /* the connection table is full */
	R_IN_REWRITE,          /* inbound: rewritten to the inbound port */
	R_IN_INBOUND_PORT,     /* inbound: already the proxy's inbound port */
	R_IN_MESH_PORT,        /* inbound: one of the mesh's own ports */
	R_IN_STATUS_PORT,      /* inbound: the pod's status port */
	R_IN_EXCLUDED_PORT,    /* inbound: excluded inbound port */
	R_IN_NOT_INCLUDED,     /* inbound: not an included inbound port */
	R_ORIGDST_HIT,
	R_ORIGDST_MISS,
	R_FAST_JOIN,           /* joined the fast path */
	R_FAST_BACKLOG,        /* left it: the peer's queue was over its receive buffer */
	R_FAST_FALLBACK,       /* left it: a redirect failed */
	R_DNS_REDIRECT,
	R_REFUSED_COLLISION,   /* inbound: refused with RST, the rewritten 4-tuple is another connection's */
};

struct event {
	__u64 ts_ns;   /* bpf_ktime_get_ns */
	__u64 netns;   /* the socket's network namespace cookie (0 on a pod interface) */
	struct addr16 pod_ip;  /* the pod the event is about, when known (all zero: not known) */
	struct addr16 sip;     /* addresses network order, ports host order */
	struct addr16 dip;
	struct addr16 orig_ip; /* the original destination, where one is involved */
	__u16 sport;
	__u16 dport;
	__u16 orig_port;
	__u16 kind;    /* enum event_kind */
	__u16 reason;  /* enum event_reason */
	__u16 pad;
	__u32 uid;
};

/* Indexes into table_fill, each named after the map it counts. */
enum table {
	T_PAIR_ORIG_DST = 0,
	T_SOCK_REFS,
	T_MAX,
};

/*
 * Types the agent reads from BTF that no map key or value carries. The function below is never
 * called, so never loaded; `used` keeps it, and with it these types, in every object's BTF.
 */
struct agent_types {
	enum ipv4_addrs ipv4_addrs;
	enum ports ports;
	enum limits limits;
	enum cfg_flags cfg_flags;
	enum pod_flags pod_flags;
	enum orig_flags orig_flags;
	enum counter counter;
	enum table table;
	enum event_kind event_kind;
	enum event_reason event_reason;
	struct event event;
};

static __attribute__((used)) void agent_types(struct agent_types *t)
{
}

/* An IPv6 address (4 words, network order) that is an IPv4 one written as ::ffff:a.b.c.d. */
static __always_inline int is_v4mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff);
}

/* A context field read at its own constant offset: volatile keeps the compiler from deriving a pointer into
 * the context (or a socket) and loading through it, which the verifier refuses. */
#define CTX_U32(p, f) (*(volatile __u32 *)&(p)->f)

/* An IPv4 address (network order) as the maps hold it. */
static __always_inline struct addr16 addr4(__u32 ip)
{
	struct addr16 a = {.w = {0, 0, bpf_htonl(0xffff), ip}};
	return a;
}

static __always_inline int addr_is4(const struct addr16 *a)
{
	return is_v4mapped(a->w[0], a->w[1], a->w[2]);
}

static __always_inline int addr_eq(const struct addr16 *a, const struct addr16 *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

static __always_inline int addr_zero(const struct addr16 *a)
{
	return !(a->w[0] | a->w[1] | a->w[2] | a->w[3]);
}

/* ::n, the IPv6 counterparts of 127.0.0.n Istio uses (::1, ::6). */
static __always_inline struct addr16 addr6_low(__u32 n)
{
	struct addr16 a = {.w = {0, 0, 0, bpf_htonl(n)}};
	return a;
}

/*
 * Writes an address and port (host order) into a sock_addr context. `v6` (an AF_INET6 socket) must be
 * a constant at the call site: after inlining only one branch is left, which the verifier needs (*4
 * programs may not touch user_ip6, nor *6 ones user_ip4). An AF_INET socket only ever gets IPv4.
 */
static __always_inline void set_sock_addr16(struct bpf_sock_addr *ctx, int v6, const struct addr16 *a, __u16 port)
{
	if (v6) {
		ctx->user_ip6[0] = a->w[0];
		ctx->user_ip6[1] = a->w[1];
		ctx->user_ip6[2] = a->w[2];
		ctx->user_ip6[3] = a->w[3];
	} else {
		ctx->user_ip4 = a->w[3];
	}
	ctx->user_port = bpf_htons(port);
}

/*
 * Writes an IPv4 address (network order) and port (host order) into a sock_addr context: as
 * ::ffff:a.b.c.d for an AF_INET6 socket. `v6` must be a constant at the call site: after inlining only
 * one branch is left, which the verifier needs (*4 programs may not touch user_ip6, nor *6 ones
 * user_ip4).
 */
static __always_inline void set_sock_addr(struct bpf_sock_addr *ctx, int v6, __u32 ip, __u16 port)
{
	if (v6) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = ip;
	} else {
		ctx->user_ip4 = ip;
	}
	ctx->user_port = bpf_htons(port);
}
