// The node's state as an operator would look at it: the datapath counters, and `merbridge status`
// (read from the pins, the way it works on a real node) cross-checked against what the kernel shows
// inside each pod: the 39807 listener's mark must be the one mark_pod_ips maps to the pod's IP.
import { COUNTER_NAMES, MARK_PORT } from "../src/maps/layouts.ts";
import { inNs } from "../testbed/mod.ts";
import { cli, type DemoNode, MESH } from "./node.ts";
import { readCounters } from "./traffic.ts";
import { dim, equal, holds, type Ledger } from "./ui.ts";

const GROUPS: [string, string[]][] = [
  ["sockmap", [
    "sockmap_add",
    "msg_redirect",
    "msg_fallback",
    "msg_backlog",
    "msg_slow_path",
    "sockmap_error",
  ]],
  ["ingress", ["ingress_redirect", "ingress_pass", "egress_restore"]],
  ["connect", [
    "connect_redirect",
    "connect_inbound",
    "connect_policy_pass",
    "connect_pod_known",
    "bind_error",
  ]],
  ["original dst", ["origdst_hit", "origdst_miss", "map_error"]],
];

export function showCounters(node: DemoNode, ui: Ledger): void {
  const c = readCounters(node.pinPath);
  const listed = GROUPS.flatMap(([, names]) => names);
  const rest = COUNTER_NAMES.filter((n) => !listed.includes(n));
  for (const [group, names] of [...GROUPS, ["other", rest] as [string, string[]]]) {
    if (!names.length) continue;
    ui.info(`${group.padEnd(13)}${names.map((n) => `${n} ${c[n as keyof typeof c]}`).join(dim(" · "))}`);
  }
  ui.check("the sockmap fast path carried the redirected connections, and nothing went wrong in the kernel", [
    holds(
      "msg_redirect",
      c.msg_redirect > 0n,
      "> 0 (app ↔ sidecar data went socket to socket)",
      c.msg_redirect,
    ),
    holds("ingress_redirect", c.ingress_redirect > 0n, "> 0", c.ingress_redirect),
    equal("sockmap_error", 0n, c.sockmap_error),
    equal("bind_error", 0n, c.bind_error),
    equal("map_error", 0n, c.map_error),
  ]);
}

interface StatusJson {
  config: { outboundPort: number; inboundPort: number; proxyUid: number; cniMode: boolean } | null;
  links: { hook: string; cgroupId: string; program: string; progId: number }[];
  maps: { map: string; entries: number | string; capacity: number }[];
  attachments: { podName: string; podIp: string; mark: number; hook: string; ifName: string }[];
}

async function listenerMarks(ns: string): Promise<number[]> {
  const out = await inNs(ns, "ss", ["-Htlne", `sport = :${MARK_PORT}`]);
  return [...out.stdout.matchAll(/fwmark:0x([0-9a-f]+)/g)].map((m) => parseInt(m[1]!, 16));
}

const hex = (n: number | undefined) => n === undefined ? "none" : `0x${n.toString(16).padStart(8, "0")}`;

export async function showStatus(node: DemoNode, ui: Ledger): Promise<void> {
  const r = await cli([
    "status",
    "--output=json",
    `--bpf-pin-path=${node.pinPath}`,
    `--state-dir=${node.stateDir}`,
  ]);
  if (r.code !== 0) {
    ui.fail("merbridge status", r.stderr.trim() || `exit ${r.code}`);
    return;
  }
  const st = JSON.parse(r.stdout) as StatusJson;
  const cfg = st.config;
  ui.check(
    cfg
      ? `mesh config: outbound :${cfg.outboundPort}, inbound :${cfg.inboundPort}, proxy uid ${cfg.proxyUid}, ` +
        `CNI mode ${cfg.cniMode ? "on" : "off"}`
      : "mesh config",
    [
      equal("outbound port", MESH.outboundPort, cfg?.outboundPort),
      equal("inbound port", MESH.inboundPort, cfg?.inboundPort),
      equal("CNI mode", true, cfg?.cniMode),
    ],
  );
  const hooks = st.links.map((l) => `${l.hook} (${l.program}, prog ${l.progId})`);
  ui.check(`cgroup programs on ${node.cgroup}`, [
    holds("pinned cgroup links", st.links.length > 0, "at least one", st.links.length),
  ], [hooks.join(", ")]);

  const entries = (name: string) => st.maps.find((m) => m.map === name)?.entries;
  for (const key of ["a", "b", "plain"] as const) {
    const pod = node.pods[key];
    const marks = await listenerMarks(pod.ns);
    const att = st.attachments.find((x) => x.podName === pod.name);
    if (pod.meshed) {
      ui.check(
        `${pod.name.padEnd(5)} ${pod.ip}: :${MARK_PORT} listener with mark ${hex(marks[0])} → ` +
          `mark_pod_ips → ${att?.podIp ?? "?"}; ${att?.hook ?? "no"} ingress on ${att?.ifName ?? "?"}`,
        [
          equal(`listeners on :${MARK_PORT}`, 1, marks.length),
          equal("the listener's mark", hex(att?.mark), hex(marks[0])),
          equal("the IP that mark maps to", pod.ip, att?.podIp),
          equal("ingress hook", "xdp", att?.hook),
        ],
      );
    } else {
      ui.check(
        `${pod.name.padEnd(5)} ${pod.ip}: outside the mesh, no listener, no map entry, no ingress program`,
        [
          equal(`listeners on :${MARK_PORT}`, 0, marks.length),
          equal("attachment", "none", att ? `${att.hook} on ${att.ifName}` : "none"),
        ],
      );
    }
  }
  const shown = ["local_pods", "mark_pod_ips", "netns_pod_ips", "pair_orig_dst", "ingress_syn"]
    .filter((n) => entries(n) !== undefined)
    .map((n) => `${n} ${entries(n)}`);
  ui.check(`map entries: ${shown.join(dim(" · "))}`, [
    equal("local_pods entries (the meshed pods)", 2, entries("local_pods")),
    equal("mark_pod_ips entries", 2, entries("mark_pod_ips")),
  ]);
}
