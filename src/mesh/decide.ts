// The reference model of the interception decisions the BPF programs make (bpf/policy.h,
// bpf/connect.bpf.c, bpf/ingress.bpf.c), in words an operator can act on. The order of the checks is
// the contract with the BPF code: change both together (tests/kernel/policy_matrix.test.ts holds the
// programs to this model). It explains; it does not prove: tests/kernel/differential.test.ts and
// differential_ipv6.test.ts hold the datapath to Istio's own iptables rules run in a namespace.
import type { CidrList, MeshParams, PodPolicy } from "./types.ts";
import { portListHas } from "./annotations.ts";
import { cidrContains, formatIpv4, parseIpv4 } from "./ipv4.ts";
import { cidr6Contains, formatIpv6, isV4Mapped, parseIpv6 } from "./ipv6.ts";
import { INBOUND_PASSTHROUGH_SRC, LOCALHOST as LOCALHOST_IP, LOOPBACK_NET } from "../generated/bpf_types.ts";

export type Verdict = "redirect" | "pass";

export interface Decision {
  verdict: Verdict;
  /** Which rule decided, in words an operator can act on. */
  reason: string;
}

/** 127.0.0.0/8, as is_loopback() in bpf/maps.h. */
const isLoopback = (ip: number) => ((ip & 0xff000000) >>> 0) === LOOPBACK_NET;

function ipOrThrow(what: string, text: string): number {
  const ip = parseIpv4(text);
  if (ip === null) throw new TypeError(`${what} is not an IPv4 address: "${text}"`);
  return ip;
}

function portOrThrow(what: string, port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`${what} must be an integer 0..65535, got ${port}`);
  }
  return port;
}

// A port matches a range when lo <= port <= hi, as port_in() in bpf/policy.h.
const inPorts = portListHas;
// An IPv4 destination is matched by the IPv4 networks only (the datapath keeps one list per family).
const inCidrs = (list: CidrList, ip: number) =>
  list.all || list.cidrs.some((c) => !c.addr.includes(":") && cidrContains(c, ip));
// And an IPv6 one by the IPv6 networks only, as ip6tables sees only IPv6.
const inCidrs6 = (list: CidrList, ip: Uint8Array) =>
  list.all || list.cidrs.some((c) => c.addr.includes(":") && cidr6Contains(parseIpv6(c.addr)!, c.prefix, ip));

/** A native IPv6 address (not ::ffff:a.b.c.d), or null. */
function nativeIpv6(text: string): Uint8Array | null {
  const b = parseIpv6(text);
  return b && !isV4Mapped(b) ? b : null;
}

/**
 * Outbound connection from a pod's application to dstIp:dstPort. `policy` null means the datapath does
 * not know the pod's policy (yet), in which case it redirects: the proxy is the safe default in a mesh.
 */
export function explainOutbound(
  policy: PodPolicy | null,
  podIp: string | null,
  dstIp: string,
  dstPort: number,
  podIp6: string | null = null,
): Decision {
  const dst6 = nativeIpv6(dstIp);
  if (dst6) return explainOutbound6(policy, podIp6, dst6, dstIp, dstPort);
  const dst = ipOrThrow("destination", dstIp);
  portOrThrow("destination port", dstPort);
  if (isLoopback(dst)) return { verdict: "pass", reason: "destination is loopback (127.0.0.0/8)" };
  if (podIp !== null && podIp !== "" && ipOrThrow("pod IP", podIp) === dst) {
    return { verdict: "pass", reason: "destination is the pod's own IP" };
  }
  if (policy === null) return { verdict: "redirect", reason: "pod policy unknown: redirected by default" };
  return byPolicy(policy, dstIp, dst, dstPort);
}

/** The pod's outbound rules alone: excluded ports, excluded ranges, included ports, included ranges. */
function byPolicy(policy: PodPolicy, dstIp: string, dst: number, dstPort: number): Decision {
  if (inPorts(policy.excludeOutboundPorts, dstPort)) {
    return { verdict: "pass", reason: `port ${dstPort} is in the excluded outbound ports` };
  }
  if (inCidrs(policy.excludeOutboundCidrs, dst)) {
    return { verdict: "pass", reason: `${dstIp} is in the excluded outbound ranges` };
  }
  if (inPorts(policy.includeOutboundPorts, dstPort)) {
    return { verdict: "redirect", reason: `port ${dstPort} is in the included outbound ports` };
  }
  if (inCidrs(policy.includeOutboundCidrs, dst)) {
    return { verdict: "redirect", reason: `${dstIp} is in the included outbound ranges` };
  }
  return { verdict: "pass", reason: "neither the port nor the address is included for capture" };
}

/** explainOutbound for a native IPv6 destination: ::1 is its only loopback address, IPv6 ranges decide. */
function explainOutbound6(
  policy: PodPolicy | null,
  podIp6: string | null,
  dst: Uint8Array,
  dstIp: string,
  dstPort: number,
): Decision {
  portOrThrow("destination port", dstPort);
  const text = formatIpv6(dst);
  if (text === "::1") return { verdict: "pass", reason: "destination is loopback (::1)" };
  const own = podIp6 ? nativeIpv6(podIp6) : null;
  if (own && formatIpv6(own) === text) return { verdict: "pass", reason: "destination is the pod's own IP" };
  if (policy === null) return { verdict: "redirect", reason: "pod policy unknown: redirected by default" };
  if (inPorts(policy.excludeOutboundPorts, dstPort)) {
    return { verdict: "pass", reason: `port ${dstPort} is in the excluded outbound ports` };
  }
  if (inCidrs6(policy.excludeOutboundCidrs, dst)) {
    return { verdict: "pass", reason: `${dstIp} is in the excluded outbound ranges` };
  }
  if (inPorts(policy.includeOutboundPorts, dstPort)) {
    return { verdict: "redirect", reason: `port ${dstPort} is in the included outbound ports` };
  }
  if (inCidrs6(policy.includeOutboundCidrs, dst)) {
    return { verdict: "redirect", reason: `${dstIp} is in the included outbound ranges` };
  }
  return { verdict: "pass", reason: "neither the port nor the address is included for capture" };
}

/**
 * Whether an included outbound range is a loopback one. istio-iptables then leaves out its rules that
 * send the app's loopback traffic direct, so that traffic follows the pod's rules like any other.
 */
export function includesLoopback(l: CidrList): boolean {
  return !l.all && l.cidrs.some((c) => c.addr.startsWith("127."));
}

export function decideOutbound(
  policy: PodPolicy | null,
  podIp: string | null,
  dstIp: string,
  dstPort: number,
): Verdict {
  return explainOutbound(policy, podIp, dstIp, dstPort).verdict;
}

/** What a connect() ends up doing: to the proxy's outbound port, to its inbound port, or untouched. */
export type ConnectVerdict = "redirect" | "inbound" | "pass";

export interface ConnectDecision {
  verdict: ConnectVerdict;
  reason: string;
}

/** One connect() from inside a meshed pod, as the programs see it. */
export interface ConnectProbe {
  /**
   * "app": neither the proxy's uid nor its gid; "proxy": the proxy's uid; "proxy-group": the proxy's gid
   * under another uid (the mesh's rules treat the two differently on loopback).
   */
  caller: "app" | "proxy" | "proxy-group";
  /** The socket's family: "inet6" writes an IPv4 destination as ::ffff:a.b.c.d. Default "inet". */
  family?: "inet" | "inet6";
  /** The address the socket was bound to before connect(), if any. */
  source?: string;
  dstIp: string;
  dstPort: number;
}

/** The calling pod as the datapath knows it: null IP when it is not identified. */
export interface CallerPod {
  ip: string | null;
  /** The pod's IPv6 address, for a dual-stack or IPv6 pod. */
  ip6?: string | null;
  policy: PodPolicy | null;
}

const INBOUND_PASSTHROUGH = formatIpv4(INBOUND_PASSTHROUGH_SRC);
const LOCALHOST = formatIpv4(LOCALHOST_IP);

/** The IPv4 address a probe's destination stands for, or null for a native IPv6 one. */
function ipv4Of(family: "inet" | "inet6", text: string): string | null {
  if (family === "inet") return text;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text);
  return m ? m[1]! : null;
}

/** The proxy (by the rule that applies) calling its own pod: inbound, but for the tunnel and excluded ports. */
function selfInbound(mesh: MeshParams, pod: CallerPod, port: number, what: string): ConnectDecision {
  if (mesh.tunnelPort !== 0 && port === mesh.tunnelPort) {
    return { verdict: "pass", reason: `the proxy calling ${what} on the tunnel port ${port}` };
  }
  if (pod.policy && inPorts(pod.policy.excludeOutboundPorts, port)) {
    return { verdict: "pass", reason: `port ${port} is in the excluded outbound ports` };
  }
  return { verdict: "inbound", reason: `the proxy calling ${what} goes to its own inbound port` };
}

/** The proxy's own connection to another pod: that pod's inbound rules if it is meshed on this node. */
function proxyToPod(mesh: MeshParams, target: PodPolicy | undefined, port: number): ConnectDecision {
  if (!target) {
    return { verdict: "pass", reason: "the proxy's own connection to a pod not meshed on this node" };
  }
  const d = explainInbound(target, mesh, port);
  return {
    verdict: d.verdict === "redirect" ? "inbound" : "pass",
    reason: `to a meshed pod of this node: ${d.reason}`,
  };
}

/**
 * Any TCP connect() from a meshed pod whose proxy listens: the checks of bpf/connect.bpf.c, which
 * follow the mesh's iptables OUTPUT rules in order. `localPod` gives the policy of a meshed pod of this
 * node by IP (the proxy's connections to those go to their inbound port by their own rules).
 */
export function explainConnect(
  mesh: MeshParams,
  pod: CallerPod,
  probe: ConnectProbe,
  localPod: (ip: string) => PodPolicy | undefined = () => undefined,
): ConnectDecision {
  const family = probe.family ?? "inet";
  const dstText = ipv4Of(family, probe.dstIp);
  if (dstText === null) return explainConnect6(mesh, pod, probe, localPod);
  const dst = ipOrThrow("destination", dstText);
  const port = portOrThrow("destination port", probe.dstPort);
  if (
    probe.source !== undefined && probe.source !== "" && ipv4Of(family, probe.source) === INBOUND_PASSTHROUGH
  ) {
    return { verdict: "pass", reason: "the socket is bound to 127.0.0.6, the proxy's inbound passthrough" };
  }
  const podIp = pod.ip ? ipOrThrow("pod IP", pod.ip) : null;
  if (isLoopback(dst) || dst === podIp) {
    const what = dst === podIp ? "the pod's own IP" : `loopback ${dstText}`;
    const keepLo = pod.policy !== null && includesLoopback(pod.policy.includeOutboundCidrs) &&
      dstText !== LOCALHOST;
    if (keepLo && probe.caller === "app") {
      const d = byPolicy(pod.policy!, dstText, dst, port);
      return {
        ...d,
        reason: `${d.reason} (a loopback range is included, so ${what} follows the pod's rules)`,
      };
    }
    const byGroup = keepLo && probe.caller === "proxy-group";
    if (!mesh.selfInbound || (probe.caller !== "proxy" && !byGroup) || dstText === LOCALHOST) {
      return { verdict: "pass", reason: `destination is ${what}, reached directly` };
    }
    return selfInbound(mesh, pod, port, what);
  }
  if (probe.caller !== "app") return proxyToPod(mesh, localPod(dstText), port);
  return explainOutbound(pod.ip ? pod.policy : null, pod.ip, dstText, port);
}

/**
 * A connect() to a native IPv6 destination: Istio's ip6tables rules, the IPv4 ones with ::6 for
 * 127.0.0.6 and ::1 for 127.0.0.1 (IPv6 has no other loopback address, so the proxy's calls to its
 * own pod go inbound only by the pod's own IPv6).
 */
function explainConnect6(
  mesh: MeshParams,
  pod: CallerPod,
  probe: ConnectProbe,
  localPod: (ip: string) => PodPolicy | undefined,
): ConnectDecision {
  const dst = nativeIpv6(probe.dstIp);
  if (!dst) throw new TypeError(`destination is not an IPv6 address: "${probe.dstIp}"`);
  const port = portOrThrow("destination port", probe.dstPort);
  const text = formatIpv6(dst);
  const src = probe.source ? parseIpv6(probe.source) : null;
  if (src && formatIpv6(src) === "::6") {
    return { verdict: "pass", reason: "the socket is bound to ::6, the proxy's inbound passthrough" };
  }
  const own = pod.ip6 ? nativeIpv6(pod.ip6) : null;
  const self = own !== null && formatIpv6(own) === text;
  if (text === "::1" || self) {
    const what = self ? "the pod's own IP" : "loopback ::1";
    if (!mesh.selfInbound || probe.caller !== "proxy" || text === "::1") {
      return { verdict: "pass", reason: `destination is ${what}, reached directly` };
    }
    return selfInbound(mesh, pod, port, what);
  }
  if (probe.caller !== "app") return proxyToPod(mesh, localPod(text), port);
  const known = pod.ip || pod.ip6;
  return explainOutbound(known ? pod.policy : null, pod.ip, probe.dstIp, port, pod.ip6 ?? null);
}

export function decideConnect(
  mesh: MeshParams,
  pod: CallerPod,
  probe: ConnectProbe,
  localPod?: (ip: string) => PodPolicy | undefined,
): ConnectVerdict {
  return explainConnect(mesh, pod, probe, localPod).verdict;
}

/** Inbound connection to a meshed pod on dstPort. */
export function explainInbound(policy: PodPolicy, mesh: MeshParams, dstPort: number): Decision {
  portOrThrow("destination port", dstPort);
  if (dstPort === mesh.inboundPort) {
    return { verdict: "pass", reason: `port ${dstPort} is the proxy's inbound port already` };
  }
  if (mesh.tunnelPort !== 0 && dstPort === mesh.tunnelPort) {
    return { verdict: "pass", reason: `port ${dstPort} is the mesh's tunnel port` };
  }
  if (!policy.includeInboundPorts.all) {
    // An explicit list is all that is captured: no exclusion is consulted (istio-iptables writes only
    // the listed ports' rules).
    return inPorts(policy.includeInboundPorts, dstPort)
      ? { verdict: "redirect", reason: `port ${dstPort} is in the included inbound ports` }
      : { verdict: "pass", reason: `port ${dstPort} is not in the included inbound ports` };
  }
  if (mesh.alwaysExcludedInboundPorts.includes(dstPort)) {
    return { verdict: "pass", reason: `port ${dstPort} is one of the ${mesh.mode} proxy's own ports` };
  }
  if (policy.statusPort !== 0 && dstPort === policy.statusPort) {
    return { verdict: "pass", reason: `port ${dstPort} is the pod's status port` };
  }
  if (inPorts(policy.excludeInboundPorts, dstPort)) {
    return { verdict: "pass", reason: `port ${dstPort} is in the excluded inbound ports` };
  }
  return { verdict: "redirect", reason: "every inbound port is captured" };
}

export function decideInbound(policy: PodPolicy, mesh: MeshParams, dstPort: number): Verdict {
  return explainInbound(policy, mesh, dstPort).verdict;
}
