// Mesh-level parameters and the decoded per-pod interception policy. The BPF-side encoding of these
// lives in src/maps/layouts.ts and bpf/common.h.

export const MESH_MODES = ["istio", "linkerd", "kuma", "osm"] as const;
export type MeshMode = typeof MESH_MODES[number];

export interface MeshParams {
  mode: MeshMode;
  /** Port the proxy listens on for redirected outbound connections (Istio 15001). */
  outboundPort: number;
  /** Port the proxy listens on for redirected inbound connections (Istio 15006). */
  inboundPort: number;
  /** Port of the proxy's DNS listener (Istio 15053); 0 when the mesh has none. */
  dnsPort: number;
  /** uid the proxy runs as; its sockets are never redirected to itself. */
  proxyUid: number;
  /** gid the proxy runs as. */
  proxyGid: number;
  /** Inbound ports never redirected, whatever the pod says (Istio 15008, 15090, 15021). */
  alwaysExcludedInboundPorts: number[];
  /**
   * The proxy (by uid) calling its own pod, or loopback other than 127.0.0.1, goes to its inbound port,
   * as the mesh's iptables rules send it (Istio, Kuma, OSM); Linkerd lets it through.
   */
  selfInbound: boolean;
  /** Port the proxy calling its own pod is never sent inbound on (Istio's HBONE 15008); 0 when none. */
  tunnelPort: number;
}

/** Inclusive port range; a single port is `from === to`. */
export interface PortRange {
  from: number;
  to: number;
}

/**
 * A port list from an annotation: `all` is "*"; otherwise `ranges`, sorted by `from`, with overlapping
 * and adjacent ranges merged, so two lists covering the same ports are equal and "80,81,82" costs one
 * of the MAX_PORT_RANGES entries.
 */
export interface PortList {
  all: boolean;
  ranges: PortRange[];
}

/**
 * A network of either family: `addr` is the network address (host bits cleared), dotted IPv4 with
 * `prefix` 0..32 or IPv6 text with `prefix` 0..128.
 */
export interface Cidr {
  addr: string;
  prefix: number;
}

/** `cidrs` lists the IPv4 networks first, then the IPv6 ones (the order the maps store them in). */
export interface CidrList {
  all: boolean;
  cidrs: Cidr[];
}

/** The per-pod settings the BPF programs apply, decoded from the pod's annotations. */
export interface PodPolicy {
  /** Status port of the proxy (never redirected inbound); 0 when none. */
  statusPort: number;
  includeOutboundPorts: PortList;
  excludeOutboundPorts: PortList;
  includeInboundPorts: PortList;
  excludeInboundPorts: PortList;
  includeOutboundCidrs: CidrList;
  excludeOutboundCidrs: CidrList;
}

/** A problem in one annotation item: logged, reported, and the rest still applies. */
export interface PolicyWarning {
  annotation: string;
  item: string;
  reason: string;
}

/** What the daemon knows about one pod of this node. */
export interface PodEntry {
  namespace: string;
  name: string;
  uid: string;
  /** Primary IPv4 of the pod ("" when not assigned yet, or when the pod has none). */
  ip: string;
  /** The pod's IPv6 address from status.podIPs ("" or absent when it has none). */
  ip6?: string;
  inMesh: boolean;
  policy: PodPolicy;
  warnings: PolicyWarning[];
}
