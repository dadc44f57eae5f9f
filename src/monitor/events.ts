// The decision events the BPF programs send to `merbridge monitor` (struct event, enum event_kind and
// enum event_reason in bpf/common.h), decoded and put into words. The layout and the enums come from
// src/generated/bpf_types.ts.
import { decode } from "../maps/codec.ts";
import {
  EV_CONNECT,
  EVENT,
  EVENT_KIND_NAMES,
  EVENT_REASON_NAMES,
  R_REDIRECT,
} from "../generated/bpf_types.ts";

export type EventKind = typeof EVENT_KIND_NAMES[number];
export type EventReason = typeof EVENT_REASON_NAMES[number];

/** What each reason means for the connection. */
const WHY: Record<EventReason, string> = {
  redirect: "redirected to the proxy's outbound port: the pod's rules include it",
  redirect_unknown: "redirected to the proxy's outbound port: the pod is not identified, its rules unknown",
  inbound_self: "the proxy calling its own pod: sent to its inbound port",
  inbound_local_pod: "the proxy calling a meshed pod of this node: sent to that pod's inbound port",
  pass_passthrough: "left alone: bound to 127.0.0.6, the proxy's inbound passthrough",
  pass_local: "left alone: loopback or the pod's own IP",
  pass_tunnel: "left alone: the proxy calling its own pod on the tunnel port",
  pass_proxy: "left alone: the proxy's own connection",
  pass_excluded_port: "left alone: an excluded outbound port",
  pass_excluded_cidr: "left alone: an excluded outbound range",
  pass_not_included: "left alone: neither the port nor the address is included for capture",
  refused_table_full: "refused: the connection table is full",
  in_rewrite: "inbound: rewritten to the proxy's inbound port",
  in_inbound_port: "inbound: already the proxy's inbound port",
  in_mesh_port: "inbound: one of the mesh's own ports, never captured",
  in_status_port: "inbound: the pod's status port",
  in_excluded_port: "inbound: an excluded inbound port",
  in_not_included: "inbound: not an included inbound port",
  origdst_hit: "original destination answered",
  origdst_miss: "original destination asked, nothing recorded",
  fast_join: "joined the sockmap fast path",
  fast_backlog: "left the fast path: the peer's queue was over its receive buffer",
  fast_fallback: "left the fast path: a redirect failed",
  dns_redirect: "DNS query sent to the proxy's DNS port",
  refused_collision:
    "inbound: refused (RST): from the same client port, another connection to this pod already holds the rewritten 4-tuple",
};

export interface MonitorEvent {
  tsNs: bigint;
  netns: bigint;
  kind: EventKind | "unknown";
  reason: EventReason | "unknown";
  /** The reason in words. */
  why: string;
  podIp: string | null;
  src: string | null;
  dst: string;
  orig: string | null;
  uid: number;
}

const hostPort = (ip: string, port: number) => ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;

export function decodeEvent(bytes: Uint8Array): MonitorEvent {
  const v = decode(EVENT, bytes);
  const n = (k: string) => v[k] as number;
  const ip = (k: string) => v[k] as string;
  const reason = EVENT_REASON_NAMES[n("reason") - R_REDIRECT];
  // All zero, or an IPv4 zero (an unbound IPv4 socket's source).
  const none = (s: string) => s === "::" || s === "0.0.0.0";
  return {
    tsNs: v.ts_ns as bigint,
    netns: v.netns as bigint,
    kind: EVENT_KIND_NAMES[n("kind") - EV_CONNECT] ?? "unknown",
    reason: reason ?? "unknown",
    why: reason ? WHY[reason] : `reason ${n("reason")}`,
    podIp: none(ip("pod_ip")) ? null : ip("pod_ip"),
    // A connect's source is only its bound address: its port is not chosen yet.
    src: none(ip("sip")) ? null : n("sport") ? hostPort(ip("sip"), n("sport")) : ip("sip"),
    dst: hostPort(ip("dip"), n("dport")),
    orig: none(ip("orig_ip")) ? null : hostPort(ip("orig_ip"), n("orig_port")),
    uid: n("uid"),
  };
}
