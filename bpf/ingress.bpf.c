// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Inbound interception on a pod's interface (CNI mode): TCP arriving for a meshed pod is rewritten to the
 * proxy's inbound port (XDP, or TC ingress), and the original destination recorded for SO_ORIGINAL_DST.
 * A SYN's record goes to the handshake LRU (ingress_syn); sockops adopts it into the connection table
 * when the proxy's socket is established, and the socket's close removes it there. An RST before that
 * drops it at once. While the connection table is full new SYNs are dropped: the connection fails at
 * connect time (the client retries) instead of losing its record once established.
 * Replies get their original source port back on TC egress of the same interface: TC's
 * bpf_l4_csum_replace is correct whether or not the checksum is still to be computed by offload, which
 * an XDP program cannot know.
 *
 * IPv4 and IPv6 alike. Only the TCP port changes, and the pseudo-header holds no port, so the same
 * incremental checksum update is right for both (the offload caveat above too: the agent turns tx
 * checksum offload off for both families at once). IPv6 extension headers: hop-by-hop, routing and
 * destination options are skipped, up to MAX_EXT_HDRS of them, to reach TCP; a fragment header, any
 * other extension (AH, ESP, ...) or a longer chain leaves the packet untouched, as does anything that
 * is not TCP.
 */
#include "common.h"
#include "maps.h"
#include "policy.h"

#define TC_ACT_SHOT 2
#define ETH_P_IPV6 0x86DD
#define MAX_EXT_HDRS 4
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_DEST 60

static __always_inline __u16 fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

/* RFC 1624 incremental update for one 16-bit field; byte order does not matter as long as it is the
 * same for all three values. */
static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 c = (__u16)~*sum;
	c += (__u16)~from;
	c += to;
	*sum = ~fold(c);
}

struct parsed {
	struct tcphdr *tcp;
	__u32 l4off; /* the TCP header's offset from the start of the frame */
	struct addr16 saddr, daddr;
};

static __always_inline int parse_tcp4(void *data, void *end, struct parsed *p)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
		return 0;
	/* Fragments other than the first carry no TCP header. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0;
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return 0;
	struct tcphdr *tcp = (void *)ip + ihl;
	if ((void *)(tcp + 1) > end)
		return 0;
	p->tcp = tcp;
	p->l4off = sizeof(struct ethhdr) + ihl;
	p->saddr = addr4(ip->saddr);
	p->daddr = addr4(ip->daddr);
	return 1;
}

static __always_inline int parse_tcp6(void *data, void *end, struct parsed *p)
{
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end)
		return 0;
	__u8 nh = ip6->nexthdr;
	__u32 off = sizeof(struct ethhdr) + sizeof(*ip6);
	for (int i = 0; i < MAX_EXT_HDRS; i++) {
		if (nh != NEXTHDR_HOP && nh != NEXTHDR_ROUTING && nh != NEXTHDR_DEST)
			break;
		struct ipv6_opt_hdr *h = data + off;
		if ((void *)(h + 1) > end)
			return 0;
		nh = h->nexthdr;
		/* hdrlen counts 8-octet units after the first 8. */
		off += ((__u32)h->hdrlen + 1) * 8;
	}
	/* A fragment (no TCP header in later fragments, the first one is left whole with them), another
	 * extension or a chain longer than we look through: not ours to rewrite. */
	if (nh != IPPROTO_TCP)
		return 0;
	/* Bounded for the verifier: at most MAX_EXT_HDRS headers of 2 KiB each. */
	if (off > sizeof(struct ethhdr) + sizeof(*ip6) + MAX_EXT_HDRS * 2048)
		return 0;
	struct tcphdr *tcp = data + off;
	if ((void *)(tcp + 1) > end)
		return 0;
	p->tcp = tcp;
	p->l4off = off;
	__builtin_memcpy(&p->saddr, &ip6->saddr, sizeof(p->saddr));
	__builtin_memcpy(&p->daddr, &ip6->daddr, sizeof(p->daddr));
	return 1;
}

static __always_inline int parse_tcp(void *data, void *end, struct parsed *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_tcp4(data, end, p);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_tcp6(data, end, p);
	return 0;
}

/* The record of a rewritten flow: the connection table first, then a handshake in progress. */
static __always_inline struct orig_dst *flow_record(struct pair_key *k)
{
	struct orig_dst *od = bpf_map_lookup_elem(&pair_orig_dst, k);
	if (od)
		return od;
	return bpf_map_lookup_elem(&ingress_syn, k);
}

enum verdict { V_PASS, V_REWRITE, V_DROP };

/*
 * Rewriting the port maps client:P -> pod:A and client:P -> pod:B onto one 4-tuple, client:P ->
 * pod:inbound. While one of them lives, the other cannot be carried (NAT would pick another source
 * port; a port rewrite cannot): it is refused at once, as a closed port would refuse it, rather than
 * left to time out or, worse, take over the first connection's record. The refusal is the pod's own
 * kernel's: the SYN is sent to port REFUSE_PORT, where nothing can listen, and the RST that comes back
 * gets the original port on TC egress like any reply (a reset the kernel builds has the checksum the
 * packet's offload state needs, which one built here could not know).
 */
#define REFUSE_PORT 0
static __always_inline int collides(struct pair_key *k, __u16 dport)
{
	struct orig_dst *live = bpf_map_lookup_elem(&pair_orig_dst, k);
	if (live && (live->flags & ORIG_F_INGRESS))
		return 1;
	struct orig_dst *handshake = bpf_map_lookup_elem(&ingress_syn, k);
	/* The same port again is the client retransmitting its SYN. */
	return handshake && handshake->port != dport;
}

/* Decides for an inbound packet: leave it, rewrite it to the inbound port, or drop it (a SYN that
 * cannot get a record). */
static __always_inline enum verdict inbound_verdict(struct parsed *p, __u16 *to)
{
	struct mesh_config *cfg = get_config();
	if (!cfg)
		return V_PASS;
	struct addr16 dip = p->daddr, sip = p->saddr;
	struct pod_config *pod = bpf_map_lookup_elem(&local_pods, &dip);
	if (!pod)
		return V_PASS;
	__u16 dport = bpf_ntohs(p->tcp->dest);
	int syn = p->tcp->syn && !p->tcp->ack;
	/* One event per connection: its SYN. */
	struct event ev = {
		.kind = EV_INGRESS,
		.pod_ip = dip,
		.sip = sip,
		.dip = dip,
		.sport = bpf_ntohs(p->tcp->source),
		.dport = dport,
	};
	enum event_reason why = inbound_rule(cfg, pod, dport);
	if (why != R_IN_REWRITE) {
		count(C_INGRESS_PASS);
		if (syn) {
			ev.reason = why;
			emit(&ev);
		}
		return V_PASS;
	}
	struct pair_key k = {
		.netns = 0,
		.sip = sip,
		.sport = bpf_ntohs(p->tcp->source),
		.dip = dip,
		.dport = cfg->inbound_port,
	};
	if (syn) {
		if (collides(&k, dport)) {
			struct pair_key rk = k;
			rk.dport = REFUSE_PORT;
			struct orig_dst od = {.ip = dip, .port = dport, .flags = ORIG_F_INGRESS};
			if (bpf_map_update_elem(&ingress_syn, &rk, &od, BPF_ANY)) {
				count(C_MAP_ERROR);
				return V_DROP;
			}
			count(C_INGRESS_COLLISION);
			ev.reason = R_REFUSED_COLLISION;
			emit(&ev);
			*to = REFUSE_PORT;
			return V_REWRITE;
		}
		ev.reason = R_REFUSED_TABLE_FULL;
		if (!conn_admitted(cfg)) {
			emit(&ev);
			return V_DROP;
		}
		struct orig_dst od = {.ip = dip, .port = dport, .flags = ORIG_F_INGRESS};
		if (bpf_map_update_elem(&ingress_syn, &k, &od, BPF_ANY)) {
			count(C_MAP_ERROR);
			return V_DROP;
		}
		ev.reason = R_IN_REWRITE;
		ev.orig_ip = dip;
		ev.orig_port = dport;
		emit(&ev);
		pod_count(&dip, PS_INBOUND);
	} else {
		/* A connection that was open before we attached keeps its port: rewriting it midway would
		 * break it. Only flows whose SYN we saw are ours. */
		struct orig_dst *od = flow_record(&k);
		if (!od || !(od->flags & ORIG_F_INGRESS) || od->port != dport) {
			count(C_INGRESS_UNTRACKED);
			return V_PASS;
		}
		/* The client gave up on the handshake: nothing will adopt the record. */
		if (p->tcp->rst && !bpf_map_delete_elem(&ingress_syn, &k))
			count(C_INGRESS_ABORT);
	}
	count(C_INGRESS_REDIRECT);
	*to = cfg->inbound_port;
	return V_REWRITE;
}

SEC("xdp")
int mb_xdp_ingress(struct xdp_md *ctx)
{
	struct parsed p;
	if (!parse_tcp((void *)(long)ctx->data, (void *)(long)ctx->data_end, &p))
		return XDP_PASS;
	__u16 to = 0;
	enum verdict v = inbound_verdict(&p, &to);
	if (v == V_DROP)
		return XDP_DROP;
	if (v == V_PASS)
		return XDP_PASS;
	__u16 new_port = bpf_htons(to);
	csum_replace2(&p.tcp->check, p.tcp->dest, new_port);
	p.tcp->dest = new_port;
	return XDP_PASS;
}

SEC("tc")
int mb_tc_ingress(struct __sk_buff *skb)
{
	struct parsed p;
	if (!parse_tcp((void *)(long)skb->data, (void *)(long)skb->data_end, &p))
		return TC_ACT_OK;
	__u16 to = 0;
	enum verdict v = inbound_verdict(&p, &to);
	if (v == V_DROP)
		return TC_ACT_SHOT;
	if (v == V_PASS)
		return TC_ACT_OK;
	__u16 from = p.tcp->dest, new_port = bpf_htons(to);
	__u32 l4 = p.l4off;
	bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), from, new_port, sizeof(new_port));
	bpf_skb_store_bytes(skb, l4 + offsetof(struct tcphdr, dest), &new_port, sizeof(new_port), 0);
	return TC_ACT_OK;
}

SEC("tc")
int mb_tc_egress(struct __sk_buff *skb)
{
	struct parsed p;
	if (!parse_tcp((void *)(long)skb->data, (void *)(long)skb->data_end, &p))
		return TC_ACT_OK;
	struct mesh_config *cfg = get_config();
	if (!cfg)
		return TC_ACT_OK;
	__u16 sport = bpf_ntohs(p.tcp->source);
	if (sport != cfg->inbound_port && !(sport == REFUSE_PORT && p.tcp->rst))
		return TC_ACT_OK;
	struct pair_key k = {
		.netns = 0,
		.sip = p.daddr,
		.sport = bpf_ntohs(p.tcp->dest),
		.dip = p.saddr,
		.dport = sport,
	};
	struct orig_dst *od = flow_record(&k);
	if (!od || !(od->flags & ORIG_F_INGRESS))
		return TC_ACT_OK;
	__u16 from = p.tcp->source, orig = bpf_htons(od->port);
	/* The proxy refused the handshake (nobody listening on the inbound port, a full backlog). */
	if (p.tcp->rst && !bpf_map_delete_elem(&ingress_syn, &k))
		count(C_INGRESS_ABORT);
	__u32 l4 = p.l4off;
	bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), from, orig, sizeof(orig));
	bpf_skb_store_bytes(skb, l4 + offsetof(struct tcphdr, source), &orig, sizeof(orig), 0);
	count(C_EGRESS_RESTORE);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
