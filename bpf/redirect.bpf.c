// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_msg on the sockhash: data written on one end of a loopback pair goes straight to the peer's
 * receive queue.
 *
 * The receiver drains what was redirected to it before what arrived over TCP. So a socket's bytes stay
 * in order only if redirected bytes never follow bytes that took the normal path: once a socket's
 * write takes the normal path, every later write on it does too. Two things move a socket there:
 * a redirect that fails (the peer is not in the sockhash, e.g. its handshake is not finished), and a
 * peer whose queue holds more than its receive buffer. The second is the backpressure TCP would give:
 * a redirected write is queued whatever the peer's buffer, so an app faster than its proxy would
 * otherwise pile up kernel memory without bound; on the normal path the TCP window holds it back.
 */
#include "common.h"
#include "maps.h"
#include <bpf/bpf_core_read.h>

/*
 * Reads from the fast-path queue do not grow the receive buffer as TCP's autotuning would, so it stays at
 * its initial size; a floor keeps bursts of a few MiB on the fast path, about what TCP's window would
 * let through on loopback by default (net.ipv4.tcp_rmem max 6 MiB).
 */
#define FAST_PATH_QUEUE_MIN (4 << 20)

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

static __always_inline int peer_backlogged(struct pair_key *peer)
{
	struct sock_ref *ref = bpf_map_lookup_elem(&sock_refs, peer);
	if (!ref)
		return 0;
	/* Read-only and fault-safe: a freed socket reads as garbage, which the cookie check rejects. */
	struct sock *sk = bpf_rdonly_cast((void *)(unsigned long)ref->addr, bpf_core_type_id_kernel(struct sock));
	if (sk->__sk_common.skc_cookie.counter != ref->cookie)
		return 0;
	int limit = sk->sk_rcvbuf;
	if (limit < FAST_PATH_QUEUE_MIN)
		limit = FAST_PATH_QUEUE_MIN;
	return sk->sk_backlog.rmem_alloc.counter > limit;
}

static __always_inline void leave_fast_path(struct bpf_sock *sk, struct pair_key *peer, __u32 why)
{
	__u32 *v = bpf_sk_storage_get(&sock_slow_path, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (v)
		*v = why;
	else
		count(C_MAP_ERROR);
	count(why);
	struct event ev = {
		.kind = EV_FASTPATH,
		.reason = why == C_MSG_BACKLOG ? R_FAST_BACKLOG : R_FAST_FALLBACK,
		.netns = peer->netns,
		.sip = peer->dip, /* this socket's own end */
		.sport = peer->dport,
		.dip = peer->sip,
		.dport = peer->sport,
	};
	emit(&ev);
}

SEC("sk_msg")
int mb_sk_msg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	if (bpf_sk_storage_get(&sock_slow_path, sk, 0, 0)) {
		count(C_MSG_SLOW_PATH);
		return SK_PASS;
	}
	struct pair_key peer = {};
	peer.sip = msg->remote_ip4;
	peer.sport = (__u16)bpf_ntohl(msg->remote_port);
	peer.dip = msg->local_ip4;
	peer.dport = (__u16)msg->local_port;
	peer.netns = pair_netns(peer.sip, peer.dip, bpf_get_netns_cookie(msg));
	if (peer_backlogged(&peer)) {
		leave_fast_path(sk, &peer, C_MSG_BACKLOG);
		return SK_PASS;
	}
	if (bpf_msg_redirect_hash(msg, &sock_pair_map, &peer, BPF_F_INGRESS) == SK_PASS)
		count(C_MSG_REDIRECT);
	else
		leave_fast_path(sk, &peer, C_MSG_FALLBACK);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
