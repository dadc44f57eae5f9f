// The connections the demo makes, each with what the design says must happen to it. What is printed
// is built from what the peers observed (the sidecars' SO_ORIGINAL_DST answers, the servers' view of
// their peer, the datapath's counters), so a line can only claim what really happened.
import { PinnedDatapathMaps } from "../src/datapath/datapath.ts";
import { COUNTER_NAMES, type CounterName } from "../src/maps/layouts.ts";
import { nettool, sleep } from "../testbed/mod.ts";
import {
  APP_PORT,
  APP_UID,
  BULK_BYTES,
  type DemoNode,
  type DemoPod,
  EXCLUDED_IN_PORT,
  EXCLUDED_OUT_PORT,
  MESH,
} from "./node.ts";
import { equal, type Expectation, holds, type Ledger, show } from "./ui.ts";

type Counters = Record<CounterName, bigint>;
type Line = Record<string, unknown>;

export function readCounters(pinPath: string): Counters {
  using m = new PinnedDatapathMaps(pinPath);
  return m.maps.counters();
}

interface Hop {
  pod: string;
  kind: string;
  orig: string;
  peer: string;
  /** Where the sidecar's own connection for this hop came from ("ip:port"), as it reported it. */
  source?: string;
}

interface Observation {
  res: Line;
  hops: Hop[];
  delta: Counters;
}

/** A counter's expected movement: an exact delta, or "some" for packet-driven counters. */
type CounterExpectation = number | "some";

interface Step {
  title: string;
  run: () => Promise<Line>;
  /** The sidecar hops the design prescribes, in order ("pod-a outbound 10.240.0.2:8080"). */
  hops: string[];
  counters: Partial<Record<CounterName, CounterExpectation>>;
  checks: (o: Observation) => Expectation[];
  /** A sentence on why, given what was observed. */
  explain: (o: Observation) => string;
}

const ipOf = (addr: unknown) => String(addr ?? "").split(":")[0];
const hello = (o: Observation) => (o.res.hello ?? {}) as Line;
const hopText = (h: Hop) => `${h.pod} ${h.kind} ${h.orig}`;

function pathText(hops: Hop[]): string {
  if (!hops.length) return "direct, no sidecar involved";
  const via = hops.map((h) => `${h.pod}'s sidecar (${h.kind})`).join(" → ");
  const origs = [...new Set(hops.map((h) => h.orig))];
  const who = hops.length === 1 ? "which" : origs.length === 1 ? "both" : "they";
  return `via ${via}, ${who} read SO_ORIGINAL_DST ${origs.join(" / ")}`;
}

function deltaText(d: Counters): string {
  const moved = COUNTER_NAMES.filter((n) => d[n] !== 0n).map((n) => `${n} +${d[n]}`);
  return `kernel: ${moved.join(", ") || "no counter moved"}`;
}

export async function runTraffic(node: DemoNode, ui: Ledger, signal: AbortSignal): Promise<void> {
  const { a, b, plain } = node.pods;
  const remote = (port: number) => `${node.otherIp}:${port}`;
  const fromPod = (pod: DemoPod, args: string[]) =>
    nettool({ netns: pod.ns, cgroup: node.cgroup, uid: APP_UID }, args);
  const fromOtherNode = (args: string[]) => nettool({ netns: node.otherNs }, args);
  const bulk = ["--bytes", String(BULK_BYTES)];
  const outbound = (pod: DemoPod, dst: string) => `${pod.name} outbound ${dst}`;
  const inbound = (pod: DemoPod, dst: string) => `${pod.name} inbound ${dst}`;
  const ok = (o: Observation) => equal("the client's result", "ok", o.res.ok === true ? "ok" : show(o.res));
  // With the source bound to the pod IP, the far end sees the pod, as with iptables REDIRECT, but on
  // the sidecar's socket rather than the app's.
  const viaSidecar = (pod: DemoPod) => (o: Observation) => [
    equal("source IP the server saw", pod.ip, ipOf(hello(o).peer)),
    holds(
      "the server's peer",
      hello(o).peer !== o.res.local,
      `the sidecar's socket, not the app's ${o.res.local}`,
      hello(o).peer,
    ),
  ];
  const appItself = (o: Observation) => [
    holds(
      "the server's peer",
      hello(o).peer !== undefined && hello(o).peer === o.res.local,
      `the client's own socket ${o.res.local}`,
      hello(o).peer,
    ),
  ];

  // Envoy's inbound hop: to the pod's own IP and port, from 127.0.0.6, which must not be captured again
  // (the path check above would show the sidecar a second time).
  const passthrough = (h: Hop | undefined) =>
    equal("source of the sidecar's hop to the app", "127.0.0.6", ipOf(h?.source));
  const excludedOut = `"${EXCLUDED_OUT_PORT}"`;
  const steps: Step[] = [
    {
      title: `pod-a → ${remote(APP_PORT)} (other node)`,
      run: () => fromPod(a, ["client", remote(APP_PORT)]),
      hops: [outbound(a, remote(APP_PORT))],
      counters: { connect_redirect: 1 },
      checks: (o) => [
        ok(o),
        ...viaSidecar(a)(o),
        equal("source IP pod-a's sidecar saw", a.ip, ipOf(o.hops[0]?.peer)),
      ],
      explain: (o) => `the server saw ${hello(o).peer}: the sidecar's connection, from the pod's own IP`,
    },
    {
      title: `pod-a → ${remote(EXCLUDED_OUT_PORT)} (other node)`,
      run: () => fromPod(a, ["client", remote(EXCLUDED_OUT_PORT)]),
      hops: [],
      counters: { connect_redirect: 0, connect_policy_pass: 1 },
      checks: (o) => [ok(o), ...appItself(o)],
      explain: (o) =>
        `excluded by pod-a's excludeOutboundPorts ${excludedOut}: the server saw the app's socket ${
          hello(o).peer
        }`,
    },
    {
      title: `pod-b → ${remote(EXCLUDED_OUT_PORT)} (other node)`,
      run: () => fromPod(b, ["client", remote(EXCLUDED_OUT_PORT)]),
      hops: [outbound(b, remote(EXCLUDED_OUT_PORT))],
      counters: { connect_redirect: 1, connect_policy_pass: 0 },
      checks: (o) => [ok(o), ...viaSidecar(b)(o)],
      explain: () =>
        `pod-b has no exclusion annotation, so ${EXCLUDED_OUT_PORT} is intercepted like any port`,
    },
    {
      title: `pod-a → pod-b ${b.ip}:${APP_PORT} (same node)`,
      run: () => fromPod(a, ["bulk-client", `${b.ip}:${APP_PORT}`, ...bulk]),
      hops: [outbound(a, `${b.ip}:${APP_PORT}`), inbound(b, `${b.ip}:${APP_PORT}`)],
      counters: { connect_redirect: 1, connect_inbound: 1, connect_passthrough: 1 },
      checks: (o) => [
        ok(o),
        equal("bytes received", BULK_BYTES, o.res.received),
        equal("source IP pod-b's sidecar saw", a.ip, ipOf(o.hops[1]?.peer)),
        passthrough(o.hops[1]),
      ],
      explain: (o) =>
        `pod-a's sidecar dialled ${b.ip}:${APP_PORT} and connect4 sent it to pod-b's :${MESH.inboundPort}; ` +
        `pod-b's sidecar dialled ${b.ip}:${APP_PORT} from ${o.hops[1]?.source}, which connect4 left alone; ` +
        `1 MiB answer intact (sha256 ${String(o.res.sha256).slice(0, 12)}…)`,
    },
    {
      title: `other node → pod-b ${b.ip}:${APP_PORT}`,
      run: () => fromOtherNode(["bulk-client", `${b.ip}:${APP_PORT}`, ...bulk]),
      hops: [inbound(b, `${b.ip}:${APP_PORT}`)],
      counters: { ingress_redirect: "some", egress_restore: "some", connect_passthrough: 1 },
      checks: (o) => [
        ok(o),
        equal("bytes received", BULK_BYTES, o.res.received),
        equal("source IP pod-b's sidecar saw", node.otherIp, ipOf(o.hops[0]?.peer)),
        passthrough(o.hops[0]),
      ],
      explain: (o) =>
        `XDP on pod-b's eth0 turned :${APP_PORT} into :${MESH.inboundPort}, TC egress turned the replies back; ` +
        `the sidecar reached the app from ${o.hops[0]?.source}; ` +
        `1 MiB answer intact through a forwarding hop (sha256 ${String(o.res.sha256).slice(0, 12)}…)`,
    },
    {
      title: `pod-a → 127.0.0.1:${APP_PORT} (loopback)`,
      run: () => fromPod(a, ["client", `127.0.0.1:${APP_PORT}`]),
      hops: [],
      counters: { connect_redirect: 0, connect_pod_known: 0 },
      checks: (o) => [ok(o), ...appItself(o)],
      explain: (o) => `localhost is never intercepted: pod-a's app saw the client itself, ${hello(o).peer}`,
    },
    {
      title: `other node → pod-a ${a.ip}:${EXCLUDED_IN_PORT}`,
      run: () => fromOtherNode(["client", `${a.ip}:${EXCLUDED_IN_PORT}`]),
      hops: [],
      counters: { ingress_redirect: 0, ingress_pass: "some" },
      checks: (o) => [ok(o), ...appItself(o)],
      explain: (o) =>
        `excluded by pod-a's excludeInboundPorts "${EXCLUDED_IN_PORT}": XDP let it pass, the app saw ${
          hello(o).peer
        }`,
    },
    {
      title: `plain → ${remote(APP_PORT)} (other node)`,
      run: () => fromPod(plain, ["client", remote(APP_PORT)]),
      hops: [],
      counters: { connect_redirect: 0, connect_pod_known: 0 },
      checks: (
        o,
      ) => [ok(o), ...appItself(o), equal("source IP the server saw", plain.ip, ipOf(hello(o).peer))],
      explain: () => "outside the mesh: no sidecar, no mark listener, nothing rewritten",
    },
  ];

  for (const [i, step] of steps.entries()) {
    signal.throwIfAborted();
    const o = await observe(node, step.hops.length, step.run);
    const expectations = [
      ...step.checks(o),
      equal("path", step.hops.join(" → ") || "direct", o.hops.map(hopText).join(" → ") || "direct"),
      ...Object.entries(step.counters).map(([name, want]) => {
        const got = o.delta[name as CounterName];
        return want === "some"
          ? holds(`${name} to move`, got > 0n, "> 0", `+${got}`)
          : equal(`${name} to move by`, `+${want}`, `+${got}`);
      }),
    ];
    // The explanation is the design's reason: only true when the connection behaved as designed.
    const asDesigned = expectations.every((e) => e.ok);
    const details = asDesigned ? [step.explain(o), deltaText(o.delta)] : [deltaText(o.delta)];
    ui.check(`${i + 1}. ${step.title}: ${pathText(o.hops)}`, expectations, details);
  }
}

async function observe(node: DemoNode, hops: number, run: () => Promise<Line>): Promise<Observation> {
  const from = { a: node.sidecars.a.lines.length, b: node.sidecars.b.lines.length };
  const accepted = () =>
    (["a", "b"] as const).flatMap((k) => {
      const lines = node.sidecars[k].lines.slice(from[k]);
      return lines.filter((l) => l.event === "accepted").map((l) => ({
        pod: node.pods[k].name,
        kind: String(l.kind),
        orig: String(l.orig ?? `(none: ${l.error})`),
        peer: String(l.peer),
        source: lines.find((u) => u.event === "upstream" && u.kind === l.kind && u.target === l.orig)
          ?.source as string | undefined,
      }));
    });
  const before = readCounters(node.pinPath);
  const res = await run();
  // The sidecars' lines travel through a pipe: give them a moment to arrive, and a little longer when
  // none are expected, so that a sidecar that should not have been involved has time to show up.
  const deadline = Date.now() + (hops ? 2000 : 200);
  while (Date.now() < deadline && (hops === 0 || accepted().length < hops)) await sleep(20);
  const after = readCounters(node.pinPath);
  const delta = {} as Counters;
  for (const n of COUNTER_NAMES) delta[n] = after[n] - before[n];
  // Outbound is the first hop of a connection, inbound the next: order them so.
  const hopsSeen = accepted().sort((x, y) =>
    (x.kind === "outbound" ? 0 : 1) - (y.kind === "outbound" ? 0 : 1)
  );
  return { res, hops: hopsSeen, delta };
}
