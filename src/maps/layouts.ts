// Encoders and decoders for the structs of bpf/common.h. Their layouts, flags and limits come from
// src/generated/bpf_types.ts, which `deno task gen` writes from the compiled objects' BTF.
import type { Cidr, CidrList, MeshParams, PodPolicy, PortList, PortRange } from "../mesh/types.ts";
import { decode, encode, parseIp4, type Value } from "./codec.ts";
import { formatIpv6, parseIpv6, prefixMask6, prefixOf6 } from "../mesh/ipv6.ts";
import { includesLoopback } from "../mesh/decide.ts";
import {
  CFG_F_CNI_MODE,
  CFG_F_DNS_CAPTURE,
  CFG_F_SELF_INBOUND,
  CFG_F_SOCKMAP,
  COUNTER_NAMES,
  MAX_ALWAYS_EXCLUDED,
  MAX_CIDRS,
  MAX_PORT_RANGES,
  MESH_CONFIG,
  ORIG_DST,
  PAIR_KEY,
  POD_CONFIG,
  POD_F_EXCLUDE_IN_PORTS_ALL,
  POD_F_EXCLUDE_OUT_CIDRS_ALL,
  POD_F_EXCLUDE_OUT_PORTS_ALL,
  POD_F_INCLUDE_IN_PORTS_ALL,
  POD_F_INCLUDE_OUT_CIDRS_ALL,
  POD_F_INCLUDE_OUT_LOOPBACK,
  POD_F_INCLUDE_OUT_PORTS_ALL,
  POD_IPS,
  TABLE_NAMES,
} from "../generated/bpf_types.ts";

export { COUNTER_NAMES, MARK_PORT, TABLE_NAMES } from "../generated/bpf_types.ts";
export type CounterName = typeof COUNTER_NAMES[number];
/** A table_fill slot, named after the map whose entries it counts. */
export type TableName = typeof TABLE_NAMES[number];

export interface MeshConfigOptions {
  dnsCapture: boolean;
  cniMode: boolean;
  /** The sk_msg fast path for loopback pairs (the daemon's --sockmap). */
  sockmap: boolean;
  /**
   * Cookie of the node's own network namespace, whose connections are never captured (host processes,
   * hostNetwork pods). 0n: none said (only safe where the programs are not attached to the host).
   */
  hostNetns: bigint;
  /** New connections are refused while pair_orig_dst holds this many entries; 0: no limit. */
  connAdmit?: number;
}

export function encodeMeshConfig(m: MeshParams, opts: MeshConfigOptions): Uint8Array {
  if (m.alwaysExcludedInboundPorts.length > MAX_ALWAYS_EXCLUDED) {
    throw new Error(`mesh ${m.mode}: more than ${MAX_ALWAYS_EXCLUDED} always-excluded inbound ports`);
  }
  return encode(MESH_CONFIG, {
    outbound_port: m.outboundPort,
    inbound_port: m.inboundPort,
    dns_port: m.dnsPort,
    flags: (opts.dnsCapture ? CFG_F_DNS_CAPTURE : 0) | (opts.cniMode ? CFG_F_CNI_MODE : 0) |
      (opts.sockmap ? CFG_F_SOCKMAP : 0) | (m.selfInbound ? CFG_F_SELF_INBOUND : 0),
    proxy_uid: m.proxyUid,
    proxy_gid: m.proxyGid,
    always_excluded_inbound: m.alwaysExcludedInboundPorts,
    n_always_excluded: m.alwaysExcludedInboundPorts.length,
    tunnel_port: m.tunnelPort,
    host_netns: opts.hostNetns,
    conn_admit: opts.connAdmit ?? 0,
  });
}

export interface DecodedMeshConfig {
  outboundPort: number;
  inboundPort: number;
  dnsPort: number;
  dnsCapture: boolean;
  cniMode: boolean;
  sockmap: boolean;
  proxyUid: number;
  proxyGid: number;
  alwaysExcludedInboundPorts: number[];
  selfInbound: boolean;
  tunnelPort: number;
  hostNetns: bigint;
  connAdmit: number;
}

export function decodeMeshConfig(b: Uint8Array): DecodedMeshConfig {
  const v = decode(MESH_CONFIG, b);
  const n = (k: string) => v[k] as number;
  return {
    outboundPort: n("outbound_port"),
    inboundPort: n("inbound_port"),
    dnsPort: n("dns_port"),
    dnsCapture: (n("flags") & CFG_F_DNS_CAPTURE) !== 0,
    cniMode: (n("flags") & CFG_F_CNI_MODE) !== 0,
    sockmap: (n("flags") & CFG_F_SOCKMAP) !== 0,
    proxyUid: n("proxy_uid"),
    proxyGid: n("proxy_gid"),
    alwaysExcludedInboundPorts: (v.always_excluded_inbound as number[]).slice(0, n("n_always_excluded")),
    selfInbound: (n("flags") & CFG_F_SELF_INBOUND) !== 0,
    tunnelPort: n("tunnel_port"),
    hostNetns: v.host_netns as bigint,
    connAdmit: n("conn_admit"),
  };
}

function maskOf(prefix: number): string {
  const m = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (m >>> s) & 0xff).join(".");
}

function prefixOf(mask: string): number {
  const b = parseIp4(mask) ?? new Uint8Array(4);
  let n = 0;
  for (const x of b) n += x.toString(2).split("").filter((c) => c === "1").length;
  return n;
}

function ranges(l: PortList, what: string): Value[] {
  if (l.ranges.length > MAX_PORT_RANGES) {
    throw new Error(`${what}: ${l.ranges.length} port ranges exceed ${MAX_PORT_RANGES}`);
  }
  // port_in() matches lo <= port <= hi: an inverted range would silently match nothing.
  for (const r of l.ranges) {
    if (r.from > r.to) throw new Error(`${what}: port range ${r.from}-${r.to} is inverted`);
  }
  return l.ranges.map((r) => ({ lo: r.from, hi: r.to }));
}

const isV6 = (c: Cidr) => c.addr.includes(":");

function cidrs(l: CidrList, what: string): Value[] {
  const v4 = l.cidrs.filter((c) => !isV6(c));
  if (v4.length > MAX_CIDRS) throw new Error(`${what}: ${v4.length} IPv4 ranges exceed ${MAX_CIDRS}`);
  return v4.map((c) => ({ addr: c.addr, mask: maskOf(c.prefix) }));
}

function cidrs6(l: CidrList, what: string): Value[] {
  const v6 = l.cidrs.filter(isV6);
  if (v6.length > MAX_CIDRS) throw new Error(`${what}: ${v6.length} IPv6 ranges exceed ${MAX_CIDRS}`);
  return v6.map((c) => {
    const addr = parseIpv6(c.addr);
    if (!addr) throw new Error(`${what}: invalid IPv6 network ${c.addr}`);
    // ip6_in() compares (ip & mask) == addr: the address must be stored masked.
    const mask = prefixMask6(c.prefix);
    return { addr: formatIpv6(addr.map((x, i) => x & mask[i]!)), mask: formatIpv6(mask) };
  });
}

const count4 = (l: CidrList) => l.cidrs.filter((c) => !isV6(c)).length;
const count6 = (l: CidrList) => l.cidrs.filter(isV6).length;

export function encodePodConfig(p: PodPolicy): Uint8Array {
  const flags = (p.includeOutboundPorts.all ? POD_F_INCLUDE_OUT_PORTS_ALL : 0) |
    (p.excludeOutboundPorts.all ? POD_F_EXCLUDE_OUT_PORTS_ALL : 0) |
    (p.includeInboundPorts.all ? POD_F_INCLUDE_IN_PORTS_ALL : 0) |
    (p.excludeInboundPorts.all ? POD_F_EXCLUDE_IN_PORTS_ALL : 0) |
    (p.includeOutboundCidrs.all ? POD_F_INCLUDE_OUT_CIDRS_ALL : 0) |
    (p.excludeOutboundCidrs.all ? POD_F_EXCLUDE_OUT_CIDRS_ALL : 0) |
    (includesLoopback(p.includeOutboundCidrs) ? POD_F_INCLUDE_OUT_LOOPBACK : 0);
  return encode(POD_CONFIG, {
    flags,
    status_port: p.statusPort,
    n_include_out_ports: p.includeOutboundPorts.ranges.length,
    n_exclude_out_ports: p.excludeOutboundPorts.ranges.length,
    n_include_in_ports: p.includeInboundPorts.ranges.length,
    n_exclude_in_ports: p.excludeInboundPorts.ranges.length,
    n_include_out_cidrs: count4(p.includeOutboundCidrs),
    n_exclude_out_cidrs: count4(p.excludeOutboundCidrs),
    n_include_out_cidrs6: count6(p.includeOutboundCidrs),
    n_exclude_out_cidrs6: count6(p.excludeOutboundCidrs),
    include_out_ports: ranges(p.includeOutboundPorts, "includeOutboundPorts"),
    exclude_out_ports: ranges(p.excludeOutboundPorts, "excludeOutboundPorts"),
    include_in_ports: ranges(p.includeInboundPorts, "includeInboundPorts"),
    exclude_in_ports: ranges(p.excludeInboundPorts, "excludeInboundPorts"),
    include_out_cidrs: cidrs(p.includeOutboundCidrs, "includeOutboundCidrs"),
    exclude_out_cidrs: cidrs(p.excludeOutboundCidrs, "excludeOutboundCidrs"),
    include_out_cidrs6: cidrs6(p.includeOutboundCidrs, "includeOutboundCidrs"),
    exclude_out_cidrs6: cidrs6(p.excludeOutboundCidrs, "excludeOutboundCidrs"),
  });
}

export function decodePodConfig(b: Uint8Array): PodPolicy {
  const v = decode(POD_CONFIG, b) as Record<string, Value>;
  const flags = v.flags as number;
  const pl = (all: number, arr: string, n: string): PortList => ({
    all: (flags & all) !== 0,
    ranges: (v[arr] as { lo: number; hi: number }[]).slice(0, v[n] as number).map((r): PortRange => ({
      from: r.lo,
      to: r.hi,
    })),
  });
  const cl = (all: number, arr: string, n: string): CidrList => ({
    all: (flags & all) !== 0,
    cidrs: [
      ...(v[arr] as { addr: string; mask: string }[]).slice(0, v[n] as number).map((c): Cidr => ({
        addr: c.addr,
        prefix: prefixOf(c.mask),
      })),
      ...(v[`${arr}6`] as { addr: string; mask: string }[]).slice(0, v[`${n}6`] as number).map((c): Cidr => ({
        addr: c.addr,
        prefix: prefixOf6(parseIpv6(c.mask) ?? new Uint8Array(16)),
      })),
    ],
  });
  return {
    statusPort: v.status_port as number,
    includeOutboundPorts: pl(POD_F_INCLUDE_OUT_PORTS_ALL, "include_out_ports", "n_include_out_ports"),
    excludeOutboundPorts: pl(POD_F_EXCLUDE_OUT_PORTS_ALL, "exclude_out_ports", "n_exclude_out_ports"),
    includeInboundPorts: pl(POD_F_INCLUDE_IN_PORTS_ALL, "include_in_ports", "n_include_in_ports"),
    excludeInboundPorts: pl(POD_F_EXCLUDE_IN_PORTS_ALL, "exclude_in_ports", "n_exclude_in_ports"),
    includeOutboundCidrs: cl(POD_F_INCLUDE_OUT_CIDRS_ALL, "include_out_cidrs", "n_include_out_cidrs"),
    excludeOutboundCidrs: cl(POD_F_EXCLUDE_OUT_CIDRS_ALL, "exclude_out_cidrs", "n_exclude_out_cidrs"),
  };
}

export interface OrigDst {
  ip: string;
  port: number;
  flags: number;
}

export function decodeOrigDst(b: Uint8Array): OrigDst {
  const v = decode(ORIG_DST, b);
  return { ip: v.ip as string, port: v.port as number, flags: v.flags as number };
}

/** A pod's identity in mark_pod_ips / netns_pod_ips: "" for a family it has no address in. */
export interface PodIps {
  ip4: string;
  ip6: string;
}

export function encodePodIps(ips: PodIps): Uint8Array {
  return encode(POD_IPS, { ip4: ips.ip4 || "0.0.0.0", ip6: ips.ip6 || "::" });
}

export function decodePodIps(b: Uint8Array): PodIps {
  const v = decode(POD_IPS, b);
  const ip4 = v.ip4 as string, ip6 = v.ip6 as string;
  return { ip4: ip4 === "0.0.0.0" ? "" : ip4, ip6: ip6 === "::" ? "" : ip6 };
}

export interface PairKey {
  netns: bigint;
  sip: string;
  sport: number;
  dip: string;
  dport: number;
}

export function decodePairKey(b: Uint8Array): PairKey {
  const v = decode(PAIR_KEY, b);
  return {
    netns: v.netns as bigint,
    sip: v.sip as string,
    sport: v.sport as number,
    dip: v.dip as string,
    dport: v.dport as number,
  };
}
