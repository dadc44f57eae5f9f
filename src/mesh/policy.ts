/*
 * Per-pod interception policy, decoded from the pod's annotations for the active mesh.
 *
 * How the datapath decides (see decide.ts, bpf/policy.h):
 *   outbound: excluded ports pass, then excluded ranges pass, then included ports redirect, then
 *             included ranges redirect; anything else passes.
 *   inbound:  the proxy's own inbound port, the mesh's always-excluded ports and the status port pass;
 *             then excluded ports pass; then included ports redirect; anything else passes.
 * So an exclusion always beats an inclusion, and an empty inclusion list captures nothing.
 *
 * Istio (traffic.sidecar.istio.io/*, as the sidecar injector and istio-iptables treat them):
 *   includeOutboundIPRanges  absent -> "*". Present, even empty, it replaces the default: "" captures
 *                            no outbound traffic by address (included ports still do).
 *   excludeOutboundIPRanges  absent -> none.
 *   includeInboundPorts      absent -> "*". "" captures no inbound traffic at all.
 *   excludeInboundPorts      absent -> none; applies on top of "*" and of a port list alike.
 *   includeOutboundPorts     absent -> none. Redirects these ports whatever the destination address,
 *                            unless the port or the address is excluded.
 *   excludeOutboundPorts     absent -> none.
 *   status.sidecar.istio.io/port  absent -> 15020; "0" -> no status port. Never captured inbound.
 *   sidecar.istio.io/interceptionMode  REDIRECT semantics are what the datapath implements; TPROXY
 *                            gets the same decisions (with a warning); NONE captures nothing.
 *   The port lists take single ports only (the injector parses each item as one port); consecutive
 *   ports still merge into one stored range.
 *   "*" is accepted in every list and means "every port" / "every address". Istio itself refuses "*" in
 *   the exclude lists and in includeOutboundPorts (injection fails); here it does the obvious thing,
 *   e.g. excludeOutboundPorts "*" sends nothing through the proxy.
 *
 * Linkerd (config.linkerd.io/*): inbound and outbound are always "*"; skip-inbound-ports and
 *   skip-outbound-ports exclude ports and accept ranges ("4000-4010", kept whole as one entry of the
 *   BPF list); skip-subnets excludes address ranges.
 *   An absent or empty skip-*-ports annotation means Linkerd's chart default, 4567,4568 (Galera); a
 *   non-empty one replaces it. The proxy's 4190/4191 are always excluded inbound (modes.ts).
 *
 * Kuma (traffic.kuma.io/*): inbound and outbound are always "*"; exclude-inbound-ports,
 *   exclude-outbound-ports and exclude-outbound-ips (addresses or CIDRs) exclude. The per-pod
 *   application probe proxy (kuma.io/application-probe-proxy-port, default 9000, "0" = none) is
 *   carried as the status port so probes reach it directly.
 *
 * OSM (openservicemesh.io/*): inbound is "*"; inbound-port-exclusion-list, outbound-port-exclusion-list
 *   and outbound-ip-range-exclusion-list exclude; outbound-ip-range-inclusion-list, when it holds at
 *   least one usable range, limits outbound capture to those ranges, otherwise everything is captured.
 *
 * Pod annotations are user input: nothing here throws on them. Each bad item becomes a warning (see
 * annotations.ts) and the rest of the policy still applies.
 */
import type { MeshMode, PodPolicy, PolicyWarning, PortList } from "./types.ts";
import { parseCidrList, type Parsed, parsePortList, parseSinglePort, WILDCARD } from "./annotations.ts";

export const ISTIO_ANNOTATIONS = {
  includeOutboundIPRanges: "traffic.sidecar.istio.io/includeOutboundIPRanges",
  excludeOutboundIPRanges: "traffic.sidecar.istio.io/excludeOutboundIPRanges",
  includeInboundPorts: "traffic.sidecar.istio.io/includeInboundPorts",
  excludeInboundPorts: "traffic.sidecar.istio.io/excludeInboundPorts",
  includeOutboundPorts: "traffic.sidecar.istio.io/includeOutboundPorts",
  excludeOutboundPorts: "traffic.sidecar.istio.io/excludeOutboundPorts",
  statusPort: "status.sidecar.istio.io/port",
  interceptionMode: "sidecar.istio.io/interceptionMode",
} as const;

export const LINKERD_ANNOTATIONS = {
  skipInboundPorts: "config.linkerd.io/skip-inbound-ports",
  skipOutboundPorts: "config.linkerd.io/skip-outbound-ports",
  skipSubnets: "config.linkerd.io/skip-subnets",
} as const;

export const KUMA_ANNOTATIONS = {
  excludeInboundPorts: "traffic.kuma.io/exclude-inbound-ports",
  excludeOutboundPorts: "traffic.kuma.io/exclude-outbound-ports",
  excludeOutboundIps: "traffic.kuma.io/exclude-outbound-ips",
  applicationProbeProxyPort: "kuma.io/application-probe-proxy-port",
} as const;

export const OSM_ANNOTATIONS = {
  inboundPortExclusionList: "openservicemesh.io/inbound-port-exclusion-list",
  outboundPortExclusionList: "openservicemesh.io/outbound-port-exclusion-list",
  outboundIpRangeExclusionList: "openservicemesh.io/outbound-ip-range-exclusion-list",
  outboundIpRangeInclusionList: "openservicemesh.io/outbound-ip-range-inclusion-list",
} as const;

export const ISTIO_DEFAULT_STATUS_PORT = 15020;
export const KUMA_DEFAULT_PROBE_PROXY_PORT = 9000;
/** Linkerd's chart default for proxyInit.ignoreInboundPorts / ignoreOutboundPorts. */
export const LINKERD_DEFAULT_SKIP_PORTS = "4567,4568";

export interface PolicyResult {
  policy: PodPolicy;
  warnings: PolicyWarning[];
}

const all = (): PortList => ({ all: true, ranges: [] });
const none = (): PortList => ({ all: false, ranges: [] });

const MAX_WARNINGS_PER_ANNOTATION = 10;

/** Collects warnings while reading annotations, so each mesh reads as a list of fields. */
class Reader {
  readonly warnings: PolicyWarning[] = [];
  constructor(readonly annotations: Record<string, string>) {}

  has(key: string): boolean {
    return Object.hasOwn(this.annotations, key) && typeof this.annotations[key] === "string";
  }

  /** The annotation's value when present (even empty), else `fallback`. */
  get(key: string, fallback: string): string {
    return this.has(key) ? this.annotations[key] as string : fallback;
  }

  take<T>(parsed: Parsed<T>): T {
    // A list of thousands of bad items would be thousands of log lines and a pod table entry as
    // large: the first few name the problem, one more says how many were left out.
    const w = parsed.warnings;
    if (w.length <= MAX_WARNINGS_PER_ANNOTATION) this.warnings.push(...w);
    else {
      this.warnings.push(...w.slice(0, MAX_WARNINGS_PER_ANNOTATION), {
        annotation: w[0]!.annotation,
        item: "...",
        reason: `${w.length - MAX_WARNINGS_PER_ANNOTATION} more items with problems not listed`,
      });
    }
    return parsed.value;
  }

  ports(key: string, fallback: string, ranges = false): PortList {
    return this.take(parsePortList(key, this.get(key, fallback), { ranges }));
  }

  cidrs(key: string, fallback: string) {
    return this.take(parseCidrList(key, this.get(key, fallback)));
  }
}

function istio(r: Reader): PodPolicy {
  const a = ISTIO_ANNOTATIONS;
  const statusPort = r.take(
    parseSinglePort(a.statusPort, r.get(a.statusPort, "15020"), ISTIO_DEFAULT_STATUS_PORT),
  );
  const mode = r.has(a.interceptionMode) ? r.get(a.interceptionMode, "").trim() : "REDIRECT";
  if (mode === "NONE") {
    // The pod asked for no interception: the proxy is reached only explicitly.
    return {
      statusPort,
      includeOutboundPorts: none(),
      excludeOutboundPorts: none(),
      includeInboundPorts: none(),
      excludeInboundPorts: none(),
      includeOutboundCidrs: { all: false, cidrs: [] },
      excludeOutboundCidrs: { all: false, cidrs: [] },
    };
  }
  if (mode === "TPROXY") {
    r.warnings.push({
      annotation: a.interceptionMode,
      item: mode,
      reason: "TPROXY is applied with REDIRECT semantics (the proxy sees the same original destination)",
    });
  } else if (mode !== "REDIRECT") {
    r.warnings.push({
      annotation: a.interceptionMode,
      item: mode,
      reason: "unknown interception mode (expected REDIRECT, TPROXY or NONE); REDIRECT applied",
    });
  }
  return {
    statusPort,
    includeOutboundPorts: r.ports(a.includeOutboundPorts, ""),
    excludeOutboundPorts: r.ports(a.excludeOutboundPorts, ""),
    includeInboundPorts: r.ports(a.includeInboundPorts, WILDCARD),
    excludeInboundPorts: r.ports(a.excludeInboundPorts, ""),
    includeOutboundCidrs: r.cidrs(a.includeOutboundIPRanges, WILDCARD),
    excludeOutboundCidrs: r.cidrs(a.excludeOutboundIPRanges, ""),
  };
}

function linkerd(r: Reader): PodPolicy {
  const a = LINKERD_ANNOTATIONS;
  // Linkerd's injector only overrides its default skip list with a non-empty annotation.
  const skip = (key: string) => {
    const v = r.get(key, "");
    return r.take(parsePortList(key, v.trim() === "" ? LINKERD_DEFAULT_SKIP_PORTS : v, { ranges: true }));
  };
  return {
    statusPort: 0,
    includeOutboundPorts: none(),
    excludeOutboundPorts: skip(a.skipOutboundPorts),
    includeInboundPorts: all(),
    excludeInboundPorts: skip(a.skipInboundPorts),
    includeOutboundCidrs: { all: true, cidrs: [] },
    excludeOutboundCidrs: r.cidrs(a.skipSubnets, ""),
  };
}

function kuma(r: Reader): PodPolicy {
  const a = KUMA_ANNOTATIONS;
  const probe = r.take(
    parseSinglePort(
      a.applicationProbeProxyPort,
      r.get(a.applicationProbeProxyPort, String(KUMA_DEFAULT_PROBE_PROXY_PORT)),
      KUMA_DEFAULT_PROBE_PROXY_PORT,
    ),
  );
  return {
    statusPort: probe,
    includeOutboundPorts: none(),
    excludeOutboundPorts: r.ports(a.excludeOutboundPorts, ""),
    includeInboundPorts: all(),
    excludeInboundPorts: r.ports(a.excludeInboundPorts, ""),
    includeOutboundCidrs: { all: true, cidrs: [] },
    excludeOutboundCidrs: r.cidrs(a.excludeOutboundIps, ""),
  };
}

function osm(r: Reader): PodPolicy {
  const a = OSM_ANNOTATIONS;
  const include = r.cidrs(a.outboundIpRangeInclusionList, "");
  return {
    statusPort: 0,
    includeOutboundPorts: none(),
    excludeOutboundPorts: r.ports(a.outboundPortExclusionList, ""),
    includeInboundPorts: all(),
    excludeInboundPorts: r.ports(a.inboundPortExclusionList, ""),
    // OSM captures everything unless the inclusion list names at least one range.
    includeOutboundCidrs: include.all || include.cidrs.length > 0 ? include : { all: true, cidrs: [] },
    excludeOutboundCidrs: r.cidrs(a.outboundIpRangeExclusionList, ""),
  };
}

const BUILDERS: Record<MeshMode, (r: Reader) => PodPolicy> = { istio, linkerd, kuma, osm };

/** Decodes a pod's interception policy for `mode` from its annotations. Never throws for bad values. */
export function podPolicy(annotations: Record<string, string>, mode: MeshMode): PolicyResult {
  const build = BUILDERS[mode];
  if (build === undefined) throw new TypeError(`podPolicy: unknown mesh mode "${String(mode)}"`);
  const r = new Reader(annotations);
  const policy = build(r);
  return { policy, warnings: r.warnings };
}

/** The policy of a pod of `mode` without any annotations. */
export function defaultPolicy(mode: MeshMode): PodPolicy {
  return podPolicy({}, mode).policy;
}
