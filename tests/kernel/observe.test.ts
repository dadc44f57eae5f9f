// `merbridge explain` against real connections, and `merbridge monitor` showing what the programs
// decided and why, on the real kernel.
import assert from "node:assert/strict";
import { explainLive } from "../../src/monitor/explain.ts";
import type { ConnectVerdict } from "../../src/mesh/decide.ts";
import { ISTIO_ANNOTATIONS as I } from "../../src/mesh/policy.ts";
import {
  APP_UID,
  createWorld,
  runCli,
  Scope,
  sleep,
  startMonitor,
  startNettool,
  type World,
} from "../../testbed/mod.ts";

const PROXY = 1337;

interface Probe {
  name: string;
  dest: (w: World) => string;
  caller: "app" | "proxy" | "proxy-group";
  source?: string;
  family?: "inet6";
}

const probes: Probe[] = [
  { name: "app to r:8080", dest: (w) => `${w.pods.r!.ip}:8080`, caller: "app" },
  { name: "app to r:9090", dest: (w) => `${w.pods.r!.ip}:9090`, caller: "app" },
  { name: "app to s:8080", dest: (w) => `${w.pods.s!.ip}:8080`, caller: "app" },
  { name: "app to its own IP", dest: (w) => `${w.pods.a!.ip}:8080`, caller: "app" },
  { name: "app to 127.0.0.1", dest: () => "127.0.0.1:8080", caller: "app" },
  {
    name: "app, AF_INET6, to r:8080",
    dest: (w) => `[::ffff:${w.pods.r!.ip}]:8080`,
    caller: "app",
    family: "inet6",
  },
  { name: "proxy to r:8080", dest: (w) => `${w.pods.r!.ip}:8080`, caller: "proxy" },
  { name: "proxy to its own pod", dest: (w) => `${w.pods.a!.ip}:8080`, caller: "proxy" },
  { name: "proxy to its own pod, tunnel port", dest: (w) => `${w.pods.a!.ip}:15008`, caller: "proxy" },
  { name: "proxy group to its own pod", dest: (w) => `${w.pods.a!.ip}:8080`, caller: "proxy-group" },
  { name: "proxy to pod b:8080", dest: (w) => `${w.pods.b!.ip}:8080`, caller: "proxy" },
  { name: "proxy to pod b's status port", dest: (w) => `${w.pods.b!.ip}:15020`, caller: "proxy" },
  {
    name: "passthrough to its own pod",
    dest: (w) => `${w.pods.a!.ip}:8080`,
    caller: "proxy",
    source: "127.0.0.6",
  },
];

const cases: { name: string; annotations: Record<string, string> }[] = [
  { name: "no annotations", annotations: {} },
  {
    name: "exclude 9090 and s",
    annotations: { [I.excludeOutboundPorts]: "9090", [I.excludeOutboundIPRanges]: "" },
  },
  {
    name: "only port 9090",
    annotations: { [I.includeOutboundIPRanges]: "", [I.includeOutboundPorts]: "9090" },
  },
];

async function world(scope: Scope) {
  const w = await createWorld(scope, { meshed: ["a", "b"], outside: { r: [8080, 9090], s: [8080] } });
  for (const [pod, ports] of [["a", [8080, 15008]], ["b", [8080, 15020]]] as const) {
    for (const port of ports) {
      const p = startNettool(scope, { netns: w.pods[pod]!.ns }, [
        "server",
        "--name",
        `${pod}-${port}`,
        "--port",
        `${port}`,
      ]);
      await p.waitFor((l) => l.event === "listening", 5000, `${pod} app ${port}`);
    }
  }
  w.identify("b");
  return w;
}

/** Runs the probe for real and reads which listener, if any, took it. */
async function observed(w: World, p: Probe): Promise<ConnectVerdict> {
  const from = { a: w.sidecars.a!.lines.length, b: w.sidecars.b!.lines.length };
  const uid = p.caller === "proxy" ? PROXY : APP_UID;
  const gid = p.caller === "app" ? APP_UID : PROXY;
  const args = [...(p.family ? ["--family", p.family] : []), ...(p.source ? ["--bind", p.source] : [])];
  const res = await w.client("a", p.dest(w), { uid, gid, args });
  assert.equal(res.ok, true, `${p.name}: ${JSON.stringify(res)}`);
  await sleep(100);
  const acc = (pod: "a" | "b") => w.accepted(pod, from[pod]).map((l) => String(l.kind));
  const kinds = [...acc("a"), ...acc("b")];
  if (kinds.includes("outbound")) return "redirect";
  if (kinds.includes("inbound")) return "inbound";
  return "pass";
}

Deno.test("kernel: explain gives the datapath's own decision for every probe", async () => {
  await using scope = new Scope();
  const w = await world(scope);
  const diffs: string[] = [];
  let compared = 0;
  for (const c of cases) {
    w.identify("a", c.annotations);
    if (c.name === "exclude 9090 and s") {
      w.identify("a", { ...c.annotations, [I.excludeOutboundIPRanges]: `${w.pods.s!.ip}/32` });
    }
    for (const p of probes) {
      const e = explainLive(w.dp.maps, {
        podIp: w.pods.a!.ip,
        dest: p.dest(w),
        caller: p.caller,
        source: p.source,
      });
      const got = await observed(w, p);
      compared++;
      if (e.verdict !== got) {
        diffs.push(`${c.name} / ${p.name}: explain ${e.verdict} (${e.reason}), kernel ${got}`);
      }
    }
  }
  assert.deepEqual(diffs, [], `${diffs.length} of ${compared} differ`);
  assert.ok(compared >= 39);
});

Deno.test("kernel: merbridge explain prints the decision and the rule, as text and JSON", async () => {
  await using scope = new Scope();
  const w = await world(scope);
  w.identify("a", { [I.excludeOutboundPorts]: "9090" });
  const cli = (args: string[]) =>
    runCli(["explain", ...args, `--bpf-pin-path=${w.pinPath}`, "--run-dir=/nonexistent"]);
  const r = w.pods.r!.ip, a = w.pods.a!.ip;
  let out = await cli([a, `${r}:9090`]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /left alone/);
  assert.match(out.stdout, /port 9090 is in the excluded outbound ports/);
  out = await cli([a, `${a}:8080`, "--from-proxy", "--output=json"]);
  const j = JSON.parse(out.stdout);
  assert.equal(j.verdict, "inbound");
  assert.equal(j.pod.identified, true);
  out = await cli([a, `${r}:8080`, "--source=127.0.0.6"]);
  assert.match(out.stdout, /127\.0\.0\.6/);
  out = await cli([a, "nonsense"]);
  assert.equal(out.code, 2, "a bad destination is a usage error");
  assert.match(out.stderr, /HOST:PORT/);
});

Deno.test("kernel: merbridge monitor streams decisions with their reasons, and nothing while nobody listens", async () => {
  await using scope = new Scope();
  const w = await world(scope);
  const a = w.pods.a!, r = w.pods.r!;
  w.identify("a", { [I.excludeOutboundPorts]: "9090" });
  // Before any monitor: the programs must not queue events for nobody.
  await w.client("a", `${r.ip}:9090`);
  const before = w.dp.maps.counters().events_lost;

  const mon = await startMonitor(scope, { pinPath: w.pinPath, args: ["--seconds=20"], timeoutMs: 10_000 });
  const leaseOn = () => w.dp.maps.monitorLeased();
  const redirected = await w.client("a", `${r.ip}:8080`);
  const excluded = await w.client("a", `${r.ip}:9090`);
  const passthrough = await w.client("a", `${a.ip}:8080`, {
    uid: PROXY,
    gid: PROXY,
    args: ["--bind", "127.0.0.6"],
  });
  for (const x of [redirected, excluded, passthrough]) assert.equal(x.ok, true, JSON.stringify(x));
  const want = (reason: string, dst: string) => (l: Record<string, unknown>) =>
    l.kind === "connect" && l.reason === reason && l.dst === dst && l.podIp === a.ip;
  await mon.waitFor(want("redirect", `${r.ip}:8080`), 5000, "the redirected connect");
  await mon.waitFor(want("pass_excluded_port", `${r.ip}:9090`), 5000, "the excluded connect");
  await mon.waitFor((l) => l.kind === "connect" && l.reason === "pass_passthrough", 5000, "the passthrough");
  await mon.waitFor(
    (l) => l.kind === "origdst" && l.reason === "origdst_hit" && l.orig === `${r.ip}:8080`,
    5000,
    "the sidecar's SO_ORIGINAL_DST",
  );
  mon.kill("SIGTERM");
  await mon.done;
  const excludedEvents = mon.lines.filter(want("pass_excluded_port", `${r.ip}:9090`));
  assert.equal(excludedEvents.length, 1, "the connect made before the monitor started was never queued");
  assert.equal(w.dp.maps.counters().events_lost, before);
  assert.equal(leaseOn(), false, "the monitor gives the lease back");
});
