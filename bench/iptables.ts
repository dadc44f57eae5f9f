// The baseline: the nat rules istio-iptables installs in a sidecar pod for the default injection
// (REDIRECT mode, all inbound ports, all outbound ranges, the always-excluded inbound ports), built
// from the same mesh parameters our datapath uses, and loaded in one iptables-restore inside the pod.
import type { MeshParams } from "../src/mesh/types.ts";
import { run } from "../testbed/mod.ts";

/** HBONE: istio-iptables never captures it, in either direction. */
const HBONE_PORT = 15008;

export function istioNatRules(m: MeshParams): string {
  const uid = String(m.proxyUid);
  const gid = String(m.proxyGid);
  const lines = [
    "*nat",
    ":ISTIO_INBOUND - [0:0]",
    ":ISTIO_REDIRECT - [0:0]",
    ":ISTIO_IN_REDIRECT - [0:0]",
    ":ISTIO_OUTPUT - [0:0]",
    `-A ISTIO_INBOUND -p tcp --dport ${HBONE_PORT} -j RETURN`,
    `-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports ${m.outboundPort}`,
    `-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports ${m.inboundPort}`,
    "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    ...m.alwaysExcludedInboundPorts.map((p) => `-A ISTIO_INBOUND -p tcp --dport ${p} -j RETURN`),
    "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
    "-A OUTPUT -j ISTIO_OUTPUT",
    "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
    `-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport ${HBONE_PORT} -m owner --uid-owner ${uid} -j ISTIO_IN_REDIRECT`,
    `-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner ${uid} -j RETURN`,
    `-A ISTIO_OUTPUT -m owner --uid-owner ${uid} -j RETURN`,
    `-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport ${HBONE_PORT} -m owner --gid-owner ${gid} -j ISTIO_IN_REDIRECT`,
    `-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner ${gid} -j RETURN`,
    `-A ISTIO_OUTPUT -m owner --gid-owner ${gid} -j RETURN`,
    "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
    "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    "COMMIT",
    "",
  ];
  return lines.join("\n");
}

/** Installs the rules in the pod's namespace (never the host's: nsenter into a namespace we made). */
export async function installIstioIptables(ns: string, m: MeshParams): Promise<void> {
  await run("nsenter", [`--net=/run/netns/${ns}`, "--", "iptables-restore", "--noflush"], {
    stdin: istioNatRules(m),
  });
}

/** Conntrack entries in the namespace: evidence that the baseline paid for connection tracking. */
export async function conntrackCount(ns: string): Promise<number | undefined> {
  const r = await run("nsenter", [
    `--net=/run/netns/${ns}`,
    "--",
    "cat",
    "/proc/sys/net/netfilter/nf_conntrack_count",
  ], {
    allowFail: true,
  });
  const n = parseInt(r.stdout.trim(), 10);
  return Number.isFinite(n) ? n : undefined;
}
