// The reference model of the interception decisions the BPF programs make (bpf/policy.h and the
// connect/ingress programs). Kernel tests compare the real datapath against it, and `merbridge pods`
// uses the explain* forms to tell an operator why a connection would or would not reach the proxy.
// The order of the checks is the contract with the BPF code: change both together.
import type { CidrList, MeshParams, PodPolicy } from "./types.ts";
import { portListHas } from "./annotations.ts";
import { cidrContains, parseIpv4 } from "./ipv4.ts";

export type Verdict = "redirect" | "pass";

export interface Decision {
  verdict: Verdict;
  /** Which rule decided, in words an operator can act on. */
  reason: string;
}

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
const inCidrs = (list: CidrList, ip: number) => list.all || list.cidrs.some((c) => cidrContains(c, ip));

/**
 * Outbound connection from a pod's application to dstIp:dstPort. `policy` null means the datapath does
 * not know the pod's policy (yet), in which case it redirects: the proxy is the safe default in a mesh.
 */
export function explainOutbound(
  policy: PodPolicy | null,
  podIp: string | null,
  dstIp: string,
  dstPort: number,
): Decision {
  const dst = ipOrThrow("destination", dstIp);
  portOrThrow("destination port", dstPort);
  if (dst >>> 24 === 127) return { verdict: "pass", reason: "destination is loopback (127.0.0.0/8)" };
  if (podIp !== null && podIp !== "" && ipOrThrow("pod IP", podIp) === dst) {
    return { verdict: "pass", reason: "destination is the pod's own IP" };
  }
  if (policy === null) return { verdict: "redirect", reason: "pod policy unknown: redirected by default" };
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

export function decideOutbound(
  policy: PodPolicy | null,
  podIp: string | null,
  dstIp: string,
  dstPort: number,
): Verdict {
  return explainOutbound(policy, podIp, dstIp, dstPort).verdict;
}

/** Inbound connection to a meshed pod on dstPort. */
export function explainInbound(policy: PodPolicy, mesh: MeshParams, dstPort: number): Decision {
  portOrThrow("destination port", dstPort);
  if (dstPort === mesh.inboundPort) {
    return { verdict: "pass", reason: `port ${dstPort} is the proxy's inbound port already` };
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
  if (inPorts(policy.includeInboundPorts, dstPort)) {
    return { verdict: "redirect", reason: `port ${dstPort} is in the included inbound ports` };
  }
  return { verdict: "pass", reason: `port ${dstPort} is not included for inbound capture` };
}

export function decideInbound(policy: PodPolicy, mesh: MeshParams, dstPort: number): Verdict {
  return explainInbound(policy, mesh, dstPort).verdict;
}
