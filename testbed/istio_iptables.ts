// Istio's own sidecar rule set (nat table, REDIRECT mode), as istio-iptables builds it from the flags the
// sidecar injector derives from a pod's annotations, written from the facts of istio-iptables' golden rule
// files. It is the oracle of the differential tests and the benchmark's iptables baseline: loaded into a
// pod's own namespace with iptables-restore, so the decisions compared against come from the real
// netfilter, not from our reference model (src/mesh/decide.ts).
import { run } from "./proc.ts";

export const PROXY_UID = 1337;
export const PROXY_GID = 1337;
export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15006;
export const TUNNEL_PORT = 15008;
export const DEFAULT_STATUS_PORT = 15020;

const A = {
  includeOutboundIPRanges: "traffic.sidecar.istio.io/includeOutboundIPRanges",
  excludeOutboundIPRanges: "traffic.sidecar.istio.io/excludeOutboundIPRanges",
  includeInboundPorts: "traffic.sidecar.istio.io/includeInboundPorts",
  excludeInboundPorts: "traffic.sidecar.istio.io/excludeInboundPorts",
  includeOutboundPorts: "traffic.sidecar.istio.io/includeOutboundPorts",
  excludeOutboundPorts: "traffic.sidecar.istio.io/excludeOutboundPorts",
  statusPort: "status.sidecar.istio.io/port",
} as const;

/** The istio-iptables inputs (its -i -x -b -d -q -o flags), each a comma-separated list or "*". */
export interface IstioFlags {
  includeOutboundIPRanges: string[] | "*";
  excludeOutboundIPRanges: string[];
  includeInboundPorts: number[] | "*";
  excludeInboundPorts: number[];
  includeOutboundPorts: number[];
  excludeOutboundPorts: number[];
}

export interface FlagOptions {
  /**
   * How the rules get installed. "init": the injector's istio-init container (the default install).
   * "cni": the istio-cni plugin, which reads the annotations the injector rewrote, excludes outbound
   * 15020 when excludeOutboundPorts is absent and always excludes inbound 15020, 15021 and 15090.
   */
  installer?: "init" | "cni";
}

/** An annotation value Istio would refuse (the injector validates before it writes any flag). */
export class IstioRejects extends Error {}

function items(v: string): string[] {
  return v.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function ports(key: string, v: string, wildcard: boolean): number[] | "*" {
  if (v.trim() === "*") {
    if (!wildcard) throw new IstioRejects(`${key}: "*" is not accepted`);
    return "*";
  }
  return items(v).map((p) => {
    if (!/^[0-9]+$/.test(p) || Number(p) > 65535) throw new IstioRejects(`${key}: bad port "${p}"`);
    return Number(p);
  });
}

const CIDR4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const CIDR6 = /^([0-9a-fA-F:]+)\/(\d{1,3})$/;

function cidrs(key: string, v: string, wildcard: boolean): string[] | "*" {
  if (v.trim() === "*") {
    if (!wildcard) throw new IstioRejects(`${key}: "*" is not accepted`);
    return "*";
  }
  return items(v).map((c) => {
    // A prefix is required: Istio parses each item as a network prefix, so a bare address is refused.
    const m6 = CIDR6.exec(c);
    if (m6) {
      if (!m6[1]!.includes(":") || Number(m6[2]) > 128) {
        throw new IstioRejects(`${key}: bad IPv6 CIDR "${c}"`);
      }
      return c;
    }
    const m = CIDR4.exec(c);
    if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) {
      throw new IstioRejects(`${key}: bad IPv4 CIDR "${c}"`);
    }
    return c;
  });
}

function dedup(ps: number[]): number[] {
  return [...new Set(ps)];
}

/** The flags the injector (or istio-cni) passes for a pod with these annotations. */
export function istioFlags(annotations: Record<string, string>, o: FlagOptions = {}): IstioFlags {
  const get = (k: string, d: string) => Object.hasOwn(annotations, k) ? annotations[k]! : d;
  const installer = o.installer ?? "init";
  const statusText = get(A.statusPort, String(DEFAULT_STATUS_PORT)).trim();
  const status = ports(A.statusPort, statusText, false) as number[];
  if (status.length > 1) throw new IstioRejects(`${A.statusPort}: one port expected`);
  const podExcluded = ports(A.excludeInboundPorts, get(A.excludeInboundPorts, ""), false) as number[];
  // The injector turns the status port into an inbound exclusion (unless it is 0 or already listed):
  // on the istio-init command line, and in the excludeInboundPorts annotation it writes for istio-cni.
  const statusPort = status[0] ?? 0;
  const withStatus = dedup([...podExcluded, ...(statusPort ? [statusPort] : [])]);
  let excludeInbound: number[];
  let excludeOutbound: number[];
  if (installer === "init") {
    // Envoy's metrics and health ports first; 15020 only as the default status port.
    excludeInbound = dedup([15090, 15021, ...withStatus]);
    excludeOutbound = ports(A.excludeOutboundPorts, get(A.excludeOutboundPorts, ""), false) as number[];
  } else {
    // istio-cni appends its fixed three to the annotation, and excludes outbound 15020 unless the pod
    // lists outbound exclusions of its own.
    excludeInbound = dedup([...withStatus, 15020, 15021, 15090]);
    excludeOutbound = ports(
      A.excludeOutboundPorts,
      get(A.excludeOutboundPorts, String(DEFAULT_STATUS_PORT)),
      false,
    ) as number[];
  }
  return {
    includeOutboundIPRanges: cidrs(A.includeOutboundIPRanges, get(A.includeOutboundIPRanges, "*"), true),
    excludeOutboundIPRanges: cidrs(
      A.excludeOutboundIPRanges,
      get(A.excludeOutboundIPRanges, ""),
      false,
    ) as string[],
    includeInboundPorts: ports(A.includeInboundPorts, get(A.includeInboundPorts, "*"), true),
    excludeInboundPorts: excludeInbound,
    includeOutboundPorts: ports(A.includeOutboundPorts, get(A.includeOutboundPorts, ""), false) as number[],
    excludeOutboundPorts: excludeOutbound,
  };
}

/** Whether a CIDR's address is a loopback one, which makes Istio keep app traffic on lo capturable. */
function loopback(cidr: string): boolean {
  return cidr.startsWith("127.");
}

/**
 * The nat rules istio-iptables writes for these flags, in order, as iptables-restore lines; with
 * `family` 6 the ip6tables ones of a dual-stack pod: the same builder with ::6 for 127.0.0.6, ::1 for
 * 127.0.0.1 and the IPv6 ranges only (each family's tables get the ranges of that family).
 */
export function istioNatRules(f: IstioFlags, family: 4 | 6 = 4): string[] {
  const v6 = family === 6;
  const ofFamily = (c: string) => c.includes(":") === v6;
  const passthrough = v6 ? "::6/128" : "127.0.0.6/32";
  const localhost = v6 ? "::1/128" : "127.0.0.1/32";
  const r: string[] = [];
  const out = (rule: string) => r.push(`-A ISTIO_OUTPUT ${rule}`);
  for (const c of ["ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"]) r.push(`-N ${c}`);
  r.push(`-A ISTIO_INBOUND -p tcp --dport ${TUNNEL_PORT} -j RETURN`);
  r.push(`-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports ${OUTBOUND_PORT}`);
  r.push(`-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports ${INBOUND_PORT}`);

  // Inbound: nothing at all for an empty list; with "*" the exclusions return first; with a list only
  // the listed ports are redirected and the exclusions are not consulted.
  if (f.includeInboundPorts === "*" || f.includeInboundPorts.length > 0) {
    r.push("-A PREROUTING -p tcp -j ISTIO_INBOUND");
    if (f.includeInboundPorts === "*") {
      for (const p of f.excludeInboundPorts) r.push(`-A ISTIO_INBOUND -p tcp --dport ${p} -j RETURN`);
      r.push("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT");
    } else {
      for (const p of f.includeInboundPorts) {
        r.push(`-A ISTIO_INBOUND -p tcp --dport ${p} -j ISTIO_IN_REDIRECT`);
      }
    }
  }

  r.push("-A OUTPUT -j ISTIO_OUTPUT");
  // Port exclusions come before everything else, the proxy's own connections included.
  for (const p of f.excludeOutboundPorts) {
    out(`-p tcp --dport ${p} -j RETURN`);
    out(`-p udp --dport ${p} -j RETURN`);
  }
  // Envoy's inbound passthrough connects from 127.0.0.6: never captured, whoever owns the socket.
  out(`-o lo -s ${passthrough} -j RETURN`);
  const keepLo = !v6 && f.includeOutboundIPRanges !== "*" && f.includeOutboundIPRanges.some(loopback);
  for (const owner of [`--uid-owner ${PROXY_UID}`, `--gid-owner ${PROXY_GID}`]) {
    // The proxy calling its own pod (not plain localhost, not the tunnel port) goes to inbound.
    out(`-o lo ! -d ${localhost} -p tcp ! --dport ${TUNNEL_PORT} -m owner ${owner} -j ISTIO_IN_REDIRECT`);
    // The app calling its own pod IP goes direct, unless loopback ranges were asked for.
    if (!keepLo) out(`-o lo -m owner ! ${owner} -j RETURN`);
    out(`-m owner ${owner} -j RETURN`);
  }
  out(`-d ${localhost} -j RETURN`);
  for (const c of f.excludeOutboundIPRanges.filter(ofFamily)) out(`-d ${c} -j RETURN`);
  for (const p of f.includeOutboundPorts) out(`-p tcp --dport ${p} -j ISTIO_REDIRECT`);
  if (f.includeOutboundIPRanges === "*") {
    out("-j ISTIO_REDIRECT");
  } else if (f.includeOutboundIPRanges.filter(ofFamily).length > 0) {
    for (const c of f.includeOutboundIPRanges.filter(ofFamily)) out(`-d ${c} -j ISTIO_REDIRECT`);
    out("-j RETURN");
  }
  return r;
}

/** iptables-restore input with Istio's nat rules for a pod with these annotations. */
export function istioIptablesRestore(
  annotations: Record<string, string>,
  o: FlagOptions = {},
  family: 4 | 6 = 4,
): string {
  return ["*nat", ...istioNatRules(istioFlags(annotations, o), family), "COMMIT", ""].join("\n");
}

/**
 * Loads Istio's rules for a pod with these annotations into the pod's namespace (never the host's: nsenter
 * into a namespace we made), with iptables-restore or, for `family` 6, ip6tables-restore.
 */
export async function installIstioIptables(
  ns: string,
  annotations: Record<string, string> = {},
  o: FlagOptions = {},
  family: 4 | 6 = 4,
): Promise<void> {
  const tool = family === 6 ? "ip6tables-restore" : "iptables-restore";
  await run("nsenter", [`--net=/run/netns/${ns}`, "--", tool, "--noflush"], {
    stdin: istioIptablesRestore(annotations, o, family),
  });
}
