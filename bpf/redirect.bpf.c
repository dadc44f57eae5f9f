// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_msg on the sockhash: data written on one end of a loopback pair goes straight to the peer's
 * receive queue. A failed redirect (peer not in the map yet, or gone) returns SK_PASS so the data takes
 * the normal TCP path instead of being dropped.
 */
#include "common.h"
#include "maps.h"

SEC("sk_msg")
int mb_sk_msg(struct sk_msg_md *msg)
{
	struct pair_key peer = {};
	peer.sip = msg->remote_ip4;
	peer.sport = (__u16)bpf_ntohl(msg->remote_port);
	peer.dip = msg->local_ip4;
	peer.dport = (__u16)msg->local_port;
	peer.netns = pair_netns(peer.sip, peer.dip, bpf_get_netns_cookie(msg));
	if (bpf_msg_redirect_hash(msg, &sock_pair_map, &peer, BPF_F_INGRESS) == SK_PASS)
		count(C_MSG_REDIRECT);
	else
		count(C_MSG_FALLBACK);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
