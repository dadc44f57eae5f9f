// `merbridge explain`: the decision the datapath makes for one connection, from this node's live maps
// (mesh config, the pod's policy, whether the pod is identified), through the reference model, with
// the rule that decided in words. Kernel tests hold it to real connections.
import type { DecodedMeshConfig } from "../maps/layouts.ts";
import type { DatapathMaps } from "../maps/manager.ts";
import { type ConnectDecision, type ConnectProbe, explainConnect, explainInbound } from "../mesh/decide.ts";
import { MESH_MODES, type MeshParams, type PodPolicy } from "../mesh/types.ts";
import { meshParams } from "../mesh/modes.ts";

/** The mesh parameters the programs run with, from the pinned mesh config. */
export function liveMesh(cfg: DecodedMeshConfig): MeshParams {
  // The config carries numbers, not the mesh's name: take the mode whose numbers these are.
  const mode = MESH_MODES.find((m) => {
    const p = meshParams(m);
    return p.outboundPort === cfg.outboundPort && p.inboundPort === cfg.inboundPort &&
      p.proxyUid === cfg.proxyUid;
  }) ?? "istio";
  return {
    mode,
    outboundPort: cfg.outboundPort,
    inboundPort: cfg.inboundPort,
    dnsPort: cfg.dnsPort,
    proxyUid: cfg.proxyUid,
    proxyGid: cfg.proxyGid,
    alwaysExcludedInboundPorts: cfg.alwaysExcludedInboundPorts,
    selfInbound: cfg.selfInbound,
    tunnelPort: cfg.tunnelPort,
  };
}

export interface ExplainQuery {
  podIp: string;
  /** "a.b.c.d:port", or "[::ffff:a.b.c.d]:port" for an AF_INET6 socket. */
  dest: string;
  /** Who connects (outbound only): default the app. */
  caller?: ConnectProbe["caller"];
  /** Address the socket is bound to first. */
  source?: string;
  /** An inbound connection to the pod on the destination's port, instead of one the pod makes. */
  inbound?: boolean;
}

export interface Explanation extends ConnectDecision {
  pod: { ip: string; meshed: boolean; identified: boolean; policy: PodPolicy | null };
  query: Required<Omit<ExplainQuery, "source">> & { source: string | null; family: "inet" | "inet6" };
}

export class ExplainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExplainError";
  }
}

function splitDest(dest: string): { ip: string; port: number; family: "inet" | "inet6" } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(dest) ?? /^([^:]+):(\d+)$/.exec(dest);
  if (!m) throw new ExplainError(`destination "${dest}" is not HOST:PORT (or [IPV6]:PORT)`);
  const port = Number(m[2]);
  if (port > 65535) throw new ExplainError(`destination port ${port} is over 65535`);
  return { ip: m[1]!, port, family: dest.startsWith("[") ? "inet6" : "inet" };
}

export function explainLive(maps: DatapathMaps, q: ExplainQuery): Explanation {
  const cfg = maps.meshConfig();
  if (!cfg) {
    throw new ExplainError("no mesh config in the pinned maps: the programs leave every connection alone");
  }
  const mesh = liveMesh(cfg);
  const pods = maps.pods();
  const policy = pods.get(q.podIp) ?? null;
  const identified = [...maps.marks().values(), ...maps.netnsPods().values()].includes(q.podIp);
  const d = splitDest(q.dest);
  const query = {
    podIp: q.podIp,
    dest: q.dest,
    caller: q.caller ?? "app",
    source: q.source ?? null,
    inbound: q.inbound ?? false,
    family: d.family,
  };
  const pod = { ip: q.podIp, meshed: policy !== null, identified, policy };
  let decision: ConnectDecision;
  if (!policy) {
    decision = { verdict: "pass", reason: `${q.podIp} is not a meshed pod of this node` };
  } else if (query.inbound) {
    const r = explainInbound(policy, mesh, d.port);
    decision = { verdict: r.verdict === "redirect" ? "inbound" : "pass", reason: r.reason };
  } else {
    decision = explainConnect(
      mesh,
      // Unidentified, the programs do not know which pod calls: no own-IP rule, no policy.
      { ip: identified ? q.podIp : null, policy: identified ? policy : null },
      { caller: query.caller, family: d.family, source: q.source, dstIp: d.ip, dstPort: d.port },
      (ip) => pods.get(ip),
    );
  }
  return { ...decision, pod, query };
}
