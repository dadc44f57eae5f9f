// The baseline: the nat rules istio-iptables installs in a sidecar pod for the default injection
// (REDIRECT mode, all inbound ports, all outbound ranges, the always-excluded inbound ports), built
// from the same mesh parameters our datapath uses, and loaded in one iptables-restore inside the pod.
import type { MeshParams } from "../src/mesh/types.ts";
import { run } from "../tests/kernel/harness/mod.ts";

/** HBONE: istio-iptables never captures it, in either direction. */
const HBONE_PORT = 15008;

/**
 * With `family` 6, the ip6tables rules istio-iptables writes next to these for a dual-stack pod: the
 * same chains with ::6 and ::1 where IPv4 has 127.0.0.6 and 127.0.0.1.
 */
export function istioNatRules(m: MeshParams, family: 4 | 6 = 4): string {
  const uid = String(m.proxyUid);
  const gid = String(m.proxyGid);
  const passthrough = family === 6 ? "::6/128" : "127.0.0.6/32";
  const localhost = family === 6 ? "::1/128" : "127.0.0.1/32";
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
    `-A ISTIO_OUTPUT -o lo -s ${passthrough} -j RETURN`,
    `-A ISTIO_OUTPUT -o lo ! -d ${localhost} -p tcp ! --dport ${HBONE_PORT} -m owner --uid-owner ${uid} -j ISTIO_IN_REDIRECT`,
    `-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner ${uid} -j RETURN`,
    `-A ISTIO_OUTPUT -m owner --uid-owner ${uid} -j RETURN`,
    `-A ISTIO_OUTPUT -o lo ! -d ${localhost} -p tcp ! --dport ${HBONE_PORT} -m owner --gid-owner ${gid} -j ISTIO_IN_REDIRECT`,
    `-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner ${gid} -j RETURN`,
    `-A ISTIO_OUTPUT -m owner --gid-owner ${gid} -j RETURN`,
    `-A ISTIO_OUTPUT -d ${localhost} -j RETURN`,
    "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    "COMMIT",
    "",
  ];
  return lines.join("\n");
}

/** Installs the rules in the pod's namespace (never the host's: nsenter into a namespace we made). */
export async function installIstioIptables(ns: string, m: MeshParams, family: 4 | 6 = 4): Promise<void> {
  const cmd = family === 6 ? "ip6tables-restore" : "iptables-restore";
  await run("nsenter", [`--net=/run/netns/${ns}`, "--", cmd, "--noflush"], {
    stdin: istioNatRules(m, family),
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
