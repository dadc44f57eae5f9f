// The test sidecar (nettool proxy) against the reference it stands in for: Istio's own iptables rule
// set in a pod, with no eBPF involved. Under those rules Envoy's inbound hop (to the pod's own IP,
// from 127.0.0.6) is exempt and its outbound hop is exempt by owner, so the stand-in must reach the app
// exactly once, from 127.0.0.6, and a remote server from the pod's IP. A capture that does take the
// inbound hop must show up as a loop the sidecar refuses, not as a sidecar spinning.
import assert from "node:assert/strict";
import { meshParams } from "../../src/mesh/modes.ts";
import {
  createNode,
  createPod,
  inNs,
  installIstioIptables,
  nettool,
  type Proc,
  Scope,
  startNettool,
  type TestPod,
} from "../../testbed/mod.ts";

const mesh = meshParams("istio");
const MIB = 1 << 20;

async function setup(scope: Scope, sidecarArgs: string[] = []) {
  const node = await createNode(scope);
  const p = await createPod(scope, node, "p", 10);
  const c = await createPod(scope, node, "c", 100);
  await installIstioIptables(p.ns);
  const sc = startNettool(scope, { netns: p.ns, uid: mesh.proxyUid, gid: mesh.proxyGid }, [
    "proxy",
    "--listen",
    `outbound=${mesh.outboundPort}`,
    "--listen",
    `inbound=${mesh.inboundPort}`,
    ...sidecarArgs,
  ]);
  for (const kind of ["outbound", "inbound"]) {
    await sc.waitFor((l) => l.event === "listening" && l.kind === kind, 5000, `sidecar ${kind}`);
  }
  const started = async (pod: TestPod, args: string[], uid?: number) => {
    const s = startNettool(scope, { netns: pod.ns, uid }, args);
    await s.waitFor((l) => l.event === "listening", 5000, args[0]);
    return s;
  };
  return { p, c, sc, started };
}

const events = (sc: Proc, event: string, from = 0) => sc.lines.slice(from).filter((l) => l.event === event);

Deno.test("kernel: the test sidecar under istio-iptables: inbound reaches the app once, from 127.0.0.6, 1 MiB each way", async () => {
  await using scope = new Scope();
  const { p, c, sc, started } = await setup(scope);
  const echo = await started(p, ["server", "--name", "app", "--port", "8080"], 2000);
  const bulk = await started(p, ["bulk-server", "--port", "8081", "--bytes", String(MIB)], 2000);
  const sink = await started(p, ["halfclose-server", "--name", "app", "--port", "8082"], 2000);

  const res = await nettool({ netns: c.ns }, ["client", `${p.ip}:8080`, "--bytes", String(MIB)]);
  assert.equal(res.ok, true, `${JSON.stringify(res)}; sidecar: ${JSON.stringify(sc.lines)}`);
  const hello = res.hello as Record<string, string>;
  assert.match(hello.peer!, /^127\.0\.0\.6:\d+$/, "the app saw Envoy's passthrough source");
  assert.equal(hello.local, `${p.ip}:8080`, "the app was reached at the pod's own IP, as Envoy does");
  const acc = events(sc, "accepted");
  assert.equal(acc.length, 1, JSON.stringify(sc.lines));
  assert.equal(acc[0]!.kind, "inbound");
  assert.equal(acc[0]!.orig, `${p.ip}:8080`);
  assert.match(String(acc[0]!.peer), new RegExp(`^${c.ip.replaceAll(".", "\\.")}:`));
  const up = events(sc, "upstream");
  assert.deepEqual(up.map((l) => [l.kind, l.target, l.source]), [["inbound", `${p.ip}:8080`, hello.peer]]);
  assert.equal(echo.lines.filter((l) => l.event === "listening").length, 1);

  const down = await nettool({ netns: c.ns }, ["bulk-client", `${p.ip}:8081`, "--bytes", String(MIB)]);
  assert.equal(down.ok, true, JSON.stringify(down));
  await bulk.waitFor((l) => l.event === "sent", 2000);
  assert.match(String(bulk.lines.find((l) => l.event === "sent")!.peer), /^127\.0\.0\.6:/);

  // Half-close passed on: the server answers only after the client's FIN came through the sidecar.
  const half = await nettool({ netns: c.ns }, ["halfclose", `${p.ip}:8082`, "--bytes", String(MIB)]);
  assert.equal(half.ok, true, JSON.stringify(half));
  await sink.waitFor((l) => l.event === "served", 2000);
  assert.equal(sink.lines.find((l) => l.event === "served")!.received, MIB);
  assert.deepEqual(events(sc, "loop"), []);
  assert.equal(events(sc, "accepted").length, 3, "one accept per connection");
});

Deno.test("kernel: the test sidecar under istio-iptables: outbound goes to the original destination from the pod IP", async () => {
  await using scope = new Scope();
  const { p, c, sc, started } = await setup(scope);
  await started(c, ["server", "--name", "remote", "--port", "9000"]);
  const res = await nettool({ netns: p.ns, uid: 1000 }, ["client", `${c.ip}:9000`, "--bytes", String(MIB)]);
  assert.equal(res.ok, true, `${JSON.stringify(res)}; sidecar: ${JSON.stringify(sc.lines)}`);
  const hello = res.hello as Record<string, string>;
  const acc = events(sc, "accepted");
  assert.equal(acc.length, 1, JSON.stringify(sc.lines));
  assert.equal(acc[0]!.kind, "outbound");
  assert.equal(acc[0]!.orig, `${c.ip}:9000`);
  const up = events(sc, "upstream");
  assert.equal(up.length, 1);
  assert.equal(up[0]!.source, hello.peer, "the server saw the sidecar's upstream socket");
  assert.match(hello.peer!, new RegExp(`^${p.ip.replaceAll(".", "\\.")}:`), "the kernel picked the pod IP");
  await sc.waitFor((l) => l.event === "closed", 2000);
  const closed = events(sc, "closed")[0]!;
  assert.equal(closed.sent, MIB, "every byte went through the sidecar, both ways");
  // Back: the echo plus the server's greeting line.
  const greeting = Number(closed.received) - MIB;
  assert.ok(greeting > 0 && greeting < 200, `received ${closed.received}`);
});

Deno.test("kernel: a capture that takes the 127.0.0.6 hop is refused as a loop, once, and the client fails fast", async () => {
  await using scope = new Scope();
  const { p, c, sc, started } = await setup(scope);
  await started(p, ["server", "--name", "app", "--port", "8080"], 2000);
  // What a datapath without the 127.0.0.6 exemption does: the proxy calling its own pod IP goes to
  // its inbound port again.
  await inNs(p.ns, "iptables", [
    "-t",
    "nat",
    "-I",
    "ISTIO_OUTPUT",
    "1",
    "-o",
    "lo",
    "-p",
    "tcp",
    "-d",
    p.ip,
    "--dport",
    "8080",
    "-j",
    "ISTIO_IN_REDIRECT",
  ]);
  const t0 = performance.now();
  const res = await nettool({ netns: c.ns }, ["client", `${p.ip}:8080`]);
  const ms = performance.now() - t0;
  assert.equal(res.ok, false, JSON.stringify(res));
  assert.ok(ms < 3000, `the client learnt it at once (${ms.toFixed(0)} ms)`);
  const loops = events(sc, "loop");
  assert.equal(loops.length, 1, JSON.stringify(sc.lines));
  assert.equal(loops[0]!.orig, `${p.ip}:8080`);
  assert.match(String(loops[0]!.peer), /^127\.0\.0\.6:/);
  assert.equal(loops[0]!.hops, 2);
  assert.equal(events(sc, "accepted").length, 2, "the first hop and the one that came back, no more");
});

Deno.test("kernel: --pause-ms delays each connection without holding up the others", async () => {
  await using scope = new Scope();
  const { p, c, sc, started } = await setup(scope, ["--pause-ms", "1500"]);
  await started(c, ["server", "--name", "remote", "--port", "9000"]);
  const t0 = performance.now();
  const runs = await Promise.all(
    [0, 1, 2].map(() => nettool({ netns: p.ns, uid: 1000 }, ["client", `${c.ip}:9000`])),
  );
  const ms = performance.now() - t0;
  for (const r of runs) assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(events(sc, "accepted").length, 3);
  assert.ok(ms >= 1500, `paused (${ms.toFixed(0)} ms)`);
  // Two pauses in a row would take 3 s: the event loop kept accepting while each one waited. The
  // pause is long so that starting three client processes on a slow machine stays well inside it.
  assert.ok(ms < 3000, `the pauses overlapped (${ms.toFixed(0)} ms)`);
});

Deno.test("kernel: a dual-stack test sidecar ([::] listeners) reads the original destination of v4-mapped connections", async () => {
  await using scope = new Scope();
  const { p, c, sc, started } = await setup(scope, ["--dual-stack"]);
  await started(p, ["server", "--name", "app", "--port", "8080"], 2000);
  await started(c, ["server", "--name", "remote", "--port", "9000"]);
  const inbound = await nettool({ netns: c.ns }, ["client", `${p.ip}:8080`]);
  const outbound = await nettool({ netns: p.ns, uid: 1000 }, ["client", `${c.ip}:9000`]);
  const seen = JSON.stringify(sc.lines);
  assert.equal(inbound.ok, true, `${JSON.stringify(inbound)}; sidecar: ${seen}`);
  assert.equal(outbound.ok, true, `${JSON.stringify(outbound)}; sidecar: ${seen}`);
  const acc = events(sc, "accepted");
  assert.deepEqual(
    acc.map((l) => [l.kind, l.family, l.orig, l.orig_level]),
    // Conntrack answers a v4-mapped connection at SOL_IP only (SOL_IPV6 fails): the sidecar falls back.
    [["inbound", "AF_INET6", `${p.ip}:8080`, "ip"], ["outbound", "AF_INET6", `${c.ip}:9000`, "ip"]],
    seen,
  );
  assert.match(String((inbound.hello as Record<string, string>).peer), /^127\.0\.0\.6:/);
});
