// The fixed numbers of each supported mesh: where its proxy listens, who the proxy runs as, and which
// inbound ports its own sidecar setup never intercepts. These mirror what each mesh's iptables init
// step does, so switching a node from iptables to this agent changes nothing a workload can observe.
import { MESH_MODES, type MeshMode, type MeshParams } from "./types.ts";
import { MAX_ALWAYS_EXCLUDED } from "../generated/bpf_types.ts";

/** A mesh name that is not one of MESH_MODES. */
export class UnknownMeshModeError extends Error {
  readonly value: string;
  constructor(value: string) {
    super(`unknown mesh mode "${value}": expected one of ${MESH_MODES.join(", ")}`);
    this.name = "UnknownMeshModeError";
    this.value = value;
  }
}

const PARAMS: Record<MeshMode, Omit<MeshParams, "mode">> = {
  istio: {
    outboundPort: 15001,
    inboundPort: 15006,
    dnsPort: 15053,
    proxyUid: 1337,
    proxyGid: 1337,
    // HBONE tunnel, Envoy Prometheus, health (readiness). The agent's status port (15020 unless the
    // pod's status.sidecar.istio.io/port says otherwise) is excluded as the pod's status port, as the
    // injector does.
    alwaysExcludedInboundPorts: [15008, 15090, 15021],
    selfInbound: true,
    tunnelPort: 15008,
  },
  linkerd: {
    outboundPort: 4140,
    inboundPort: 4143,
    // Linkerd has no DNS listener of its own.
    dnsPort: 0,
    proxyUid: 2102,
    // Linkerd does not pin a group for its proxy. The datapath treats a socket as the proxy's when
    // either the uid or the gid matches, so the gid must never be a group applications commonly share
    // (0 would make every root-group process look like the proxy); the proxy's uid number is safe.
    proxyGid: 2102,
    // linkerd-init always skips the proxy's control (4190) and admin (4191) ports inbound.
    alwaysExcludedInboundPorts: [4190, 4191],
    // linkerd-init returns everything the proxy sends and everything on loopback.
    selfInbound: false,
    tunnelPort: 0,
  },
  kuma: {
    outboundPort: 15001,
    inboundPort: 15006,
    dnsPort: 15053,
    proxyUid: 5678,
    proxyGid: 5678,
    // Envoy admin of kuma-dp. The application probe proxy port is per pod, carried as the status port.
    alwaysExcludedInboundPorts: [9901],
    selfInbound: true,
    tunnelPort: 0,
  },
  osm: {
    outboundPort: 15001,
    inboundPort: 15003,
    dnsPort: 0,
    proxyUid: 1500,
    proxyGid: 1500,
    // Envoy Prometheus listener, the rewritten liveness/readiness/startup probe listeners, and
    // osm-healthcheck (TCP probes rewritten to HTTP).
    alwaysExcludedInboundPorts: [15010, 15901, 15902, 15903, 15904],
    selfInbound: true,
    tunnelPort: 0,
  },
};

for (const [mode, p] of Object.entries(PARAMS)) {
  // The BPF mesh_config holds a fixed number of these; a longer list would be cut silently there.
  if (p.alwaysExcludedInboundPorts.length > MAX_ALWAYS_EXCLUDED) {
    throw new Error(`${mode}: more than ${MAX_ALWAYS_EXCLUDED} always-excluded inbound ports`);
  }
}

/** The parameters of `mode`. Returns a fresh object each call, so callers may modify it. */
export function meshParams(mode: MeshMode): MeshParams {
  const p = PARAMS[mode];
  if (p === undefined) throw new UnknownMeshModeError(String(mode));
  return { mode, ...p, alwaysExcludedInboundPorts: [...p.alwaysExcludedInboundPorts] };
}

export function isMeshMode(value: string): value is MeshMode {
  return (MESH_MODES as readonly string[]).includes(value);
}

/** Parses a mesh mode from a flag or config value (surrounding spaces and case are ignored). */
export function parseMeshMode(value: string): MeshMode {
  const v = value.trim().toLowerCase();
  if (!isMeshMode(v)) throw new UnknownMeshModeError(value);
  return v;
}
