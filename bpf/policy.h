/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The interception decisions; src/mesh/decide.ts is the reference model kernel tests compare against. */
#pragma once
#include "common.h"

static __always_inline int port_in(const struct port_range *list, __u8 n, __u16 port)
{
	/* Inclusive on both ends: a single port is stored as lo == hi. The constant bound is what the
	 * verifier needs; n stops the scan early. */
	for (int i = 0; i < MAX_PORT_RANGES; i++) {
		if (i >= n)
			break;
		if (list[i].lo <= port && port <= list[i].hi)
			return 1;
	}
	return 0;
}

static __always_inline int ip_in(const struct cidr4 *list, __u8 n, __u32 ip)
{
	for (int i = 0; i < MAX_CIDRS; i++) {
		if (i >= n)
			break;
		if ((ip & list[i].mask) == list[i].addr)
			return 1;
	}
	return 0;
}

/* Outbound, for a pod whose policy is known: the rule that decides. Order: excluded ports, excluded
 * ranges, included ports, included ranges; anything else is left alone. */
static __always_inline enum event_reason outbound_rule(const struct pod_config *p, __u32 dip, __u16 dport)
{
	if ((p->flags & POD_F_EXCLUDE_OUT_PORTS_ALL) || port_in(p->exclude_out_ports, p->n_exclude_out_ports, dport))
		return R_PASS_EXCLUDED_PORT;
	if ((p->flags & POD_F_EXCLUDE_OUT_CIDRS_ALL) || ip_in(p->exclude_out_cidrs, p->n_exclude_out_cidrs, dip))
		return R_PASS_EXCLUDED_CIDR;
	if ((p->flags & POD_F_INCLUDE_OUT_PORTS_ALL) || port_in(p->include_out_ports, p->n_include_out_ports, dport))
		return R_REDIRECT;
	if ((p->flags & POD_F_INCLUDE_OUT_CIDRS_ALL) || ip_in(p->include_out_cidrs, p->n_include_out_cidrs, dip))
		return R_REDIRECT;
	return R_PASS_NOT_INCLUDED;
}

static __always_inline int always_excluded_in(const struct mesh_config *cfg, __u16 port)
{
	for (int i = 0; i < MAX_ALWAYS_EXCLUDED; i++) {
		if (i >= cfg->n_always_excluded)
			break;
		if (cfg->always_excluded_inbound[i] == port)
			return 1;
	}
	return 0;
}

/* Inbound to a meshed pod on dport: the rule that decides whether it goes to the proxy's inbound port
 * (R_IN_REWRITE) or not. */
static __always_inline enum event_reason inbound_rule(const struct mesh_config *cfg, const struct pod_config *p,
						      __u16 dport)
{
	if (dport == cfg->inbound_port)
		return R_IN_INBOUND_PORT;
	if (cfg->tunnel_port && dport == cfg->tunnel_port)
		return R_IN_MESH_PORT;
	/* An explicit list of included ports is all that is captured: istio-iptables writes only those
	 * rules, and no exclusion is consulted. */
	if (!(p->flags & POD_F_INCLUDE_IN_PORTS_ALL))
		return port_in(p->include_in_ports, p->n_include_in_ports, dport) ? R_IN_REWRITE : R_IN_NOT_INCLUDED;
	if (always_excluded_in(cfg, dport))
		return R_IN_MESH_PORT;
	if (p->status_port && dport == p->status_port)
		return R_IN_STATUS_PORT;
	if ((p->flags & POD_F_EXCLUDE_IN_PORTS_ALL) || port_in(p->exclude_in_ports, p->n_exclude_in_ports, dport))
		return R_IN_EXCLUDED_PORT;
	return R_IN_REWRITE;
}
