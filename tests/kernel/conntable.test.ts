// Connection state at node scale, in a bounded form (`deno task soak` runs the long one): every
// connection-keyed entry goes when its connection ends, a flood of bare SYNs cannot evict a live
// connection's record, and a full table refuses new connections at connect() instead of breaking one
// midway. An idle pooled connection, inbound through XDP and TC and outbound, must keep working.
import assert from "node:assert/strict";
import { attachIngress, detachIngress, type IngressHook } from "../../src/xdp/attacher.ts";
import { APP_UID, createWorld, nettool, Scope, sleep, startNettool, type World } from "../../testbed/mod.ts";

const CHURN = 3000;
const SYNS = 3000;
const SYN_TABLE = 1024;

async function until(what: string, pred: () => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

async function appServer(scope: Scope, w: World, pod: string, port = 8080) {
  const p = startNettool(scope, { netns: w.pods[pod]!.ns }, [
    "server",
    "--name",
    `${pod}-app`,
    "--port",
    `${port}`,
  ]);
  await p.waitFor((l) => l.event === "listening", 5000, `${pod} app`);
}

/** A connection opened now and used again only once `go()` is called. */
async function idleConnection(
  scope: Scope,
  w: World,
  from: string,
  target: string,
  inCgroup: boolean,
  sport?: number,
) {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-idle-" });
  scope.defer(() => Deno.remove(dir, { recursive: true }));
  await Deno.chmod(dir, 0o755); // the peer runs as the app's uid
  const go = `${dir}/go`;
  const p = startNettool(scope, {
    netns: w.pods[from]!.ns,
    cgroup: inCgroup ? w.cgroup : undefined,
    uid: APP_UID,
  }, ["idle-echo", target, "--go", go, ...(sport ? ["--sport", String(sport)] : [])]);
  const open = await p.waitFor((l) => l.event === "open" || l.ok === false, 5000, "idle connection open");
  assert.equal(open.event, "open", JSON.stringify(open));
  return {
    async use() {
      await Deno.writeTextFile(go, "");
      const r = await p.waitFor((l) => "ok" in l, 10_000, "idle connection used");
      await p.done;
      return r;
    },
  };
}

for (const hook of ["xdp", "tc"] as IngressHook[]) {
  Deno.test(`kernel: an idle inbound connection through ${hook} outlives ${CHURN} others and ${SYNS} bare SYNs`, async () => {
    await using scope = new Scope();
    const w = await createWorld(scope, { meshed: ["a"], outside: { r: [] }, synTableSize: SYN_TABLE });
    const { a } = w.pods as Record<string, { ns: string; ip: string }>;
    await appServer(scope, w, "a");
    w.identify("a");
    const target = { netnsPath: `/run/netns/${a!.ns}`, ifName: "eth0", pinDir: `${w.pinPath}/pods/a` };
    attachIngress(target, w.dp.ingressPrograms(), { hook, hardwareChecksum: false });
    scope.defer(() => detachIngress(target, true));
    const fill = () => w.dp.maps.tableFill().pair_orig_dst;
    assert.equal(fill(), 0);

    const idle = await idleConnection(scope, w, "r", `${a!.ip}:8080`, false);
    await until("the idle connection's record is adopted", () => fill() === 1);
    const before = w.dp.maps.counters();

    const churn = await nettool({ netns: w.pods.r!.ns }, [
      "connect-loop",
      `${a!.ip}:8080`,
      "--count",
      `${CHURN}`,
    ]);
    assert.equal(churn.ok, true, JSON.stringify(churn));
    // From an address nobody answers for: the SYN-ACKs go nowhere, no RST comes back.
    const flood = await nettool({ netns: w.pods.r!.ns }, [
      "syn-flood",
      `${a!.ip}:8080`,
      "--count",
      `${SYNS}`,
      "--src",
      `${w.node.subnet}.250`,
    ]);
    assert.equal(flood.sent, SYNS);
    // Each churned connection's record went with its connection; the SYNs only fill the LRU.
    await until(`the connection table is back to the idle connection (${fill()})`, () => fill() === 1);
    assert.ok(w.dp.maps.handshakes().length <= SYN_TABLE, "the handshake table stays within its size");
    const after = w.dp.maps.counters();
    assert.ok(
      after.ingress_adopt - before.ingress_adopt >= BigInt(CHURN),
      "every accepted connection adopted",
    );
    assert.equal(after.table_full - before.table_full, 0n);

    const used = await idle.use();
    assert.equal(used.ok, true, `the idle connection still works: ${JSON.stringify(used)}`);
    await until("its record goes when it closes", () => fill() === 0);
  });
}

Deno.test(`kernel: an idle outbound connection outlives ${CHURN} others; records go with their connections`, async () => {
  await using scope = new Scope();
  const w = await createWorld(scope, { meshed: ["a"], outside: { r: [8080] } });
  const { r } = w.pods as Record<string, { ns: string; ip: string }>;
  w.identify("a");
  const fill = () => w.dp.maps.tableFill();
  const idle = await idleConnection(scope, w, "a", `${r!.ip}:8080`, true);
  await until("the idle connection has its record", () => fill().pair_orig_dst === 1);
  const before = w.dp.maps.counters();
  const churn = await nettool({ netns: w.pods.a!.ns, cgroup: w.cgroup, uid: APP_UID }, [
    "connect-loop",
    `${r!.ip}:8080`,
    "--count",
    `${CHURN}`,
  ]);
  assert.equal(churn.ok, true, JSON.stringify(churn));
  assert.ok(w.dp.maps.counters().connect_redirect - before.connect_redirect >= BigInt(CHURN));
  await until(`the table is back to the idle connection (${JSON.stringify(fill())})`, () => {
    const f = fill();
    return f.pair_orig_dst === 1 && f.sock_refs <= 2;
  });
  // The kernel's own count agrees with the programs' (where the kernel keeps one).
  const kernel = w.dp.tableFills().find((t) => t.map === "pair_orig_dst")!;
  if (kernel.entries !== undefined) assert.equal(kernel.entries, 1);
  const used = await idle.use();
  assert.equal(used.ok, true, JSON.stringify(used));
  await until("every record is gone", () => fill().pair_orig_dst === 0 && fill().sock_refs === 0);
});

Deno.test("kernel: a full connection table refuses connect() at once, and live connections keep working", async () => {
  await using scope = new Scope();
  // 300 slots, of which new connections may take 44 (room for in-flight ones is kept).
  const w = await createWorld(scope, { meshed: ["a"], outside: { r: [8080] }, connTableSize: 300 });
  const { a, r } = w.pods as Record<string, { ns: string; ip: string }>;
  w.identify("a");
  const idle = await idleConnection(scope, w, "a", `${r!.ip}:8080`, true);
  const holder = startNettool(scope, { netns: a!.ns, cgroup: w.cgroup, uid: APP_UID }, [
    "hold",
    `${r!.ip}:8080`,
    "--count",
    "100",
  ]);
  const held = await holder.waitFor((l) => l.event === "held", 20_000, "connections held");
  assert.equal(held.n, 43, "the idle one and 43 more fit");
  assert.match(String(held.error), /errno 1\)/, "the next connect() fails with EPERM, at once");
  assert.ok(w.dp.maps.counters().table_full >= 1n);
  const used = await idle.use();
  assert.equal(used.ok, true, `connections already open are unaffected: ${JSON.stringify(used)}`);
  holder.kill();
  await holder.done;
  await until("the held connections' records are gone", () => w.dp.maps.tableFill().pair_orig_dst === 0);
  const again = await w.client("a", `${r!.ip}:8080`);
  assert.equal(again.ok, true, `room again: ${JSON.stringify(again)}`);
});

for (const hook of ["xdp", "tc"] as IngressHook[]) {
  Deno.test(`kernel: ${hook}: a second connection from the same client port to another port of the pod is refused at once`, async () => {
    await using scope = new Scope();
    const w = await createWorld(scope, { meshed: ["a"], outside: { r: [] } });
    const { a } = w.pods as Record<string, { ns: string; ip: string }>;
    await appServer(scope, w, "a", 8080);
    await appServer(scope, w, "a", 8090);
    w.identify("a");
    const target = { netnsPath: `/run/netns/${a!.ns}`, ifName: "eth0", pinDir: `${w.pinPath}/pods/a` };
    attachIngress(target, w.dp.ingressPrograms(), { hook, hardwareChecksum: false });
    scope.defer(() => detachIngress(target, true));
    const sport = 40000 + (Deno.pid % 20000);
    // Both become client:sport -> pod:15006 once rewritten: only one of them can be carried.
    const first = await idleConnection(scope, w, "r", `${a!.ip}:8090`, false, sport);
    const before = w.dp.maps.counters();
    const t0 = Date.now();
    const second = await nettool({ netns: w.pods.r!.ns }, [
      "client",
      `${a!.ip}:8080`,
      "--sport",
      String(sport),
      "--timeout",
      "10",
    ]);
    const ms = Date.now() - t0;
    assert.equal(second.ok, false, JSON.stringify(second));
    assert.equal(second.errno, 111, `refused (ECONNREFUSED), not timed out: ${JSON.stringify(second)}`);
    assert.ok(ms < 3000, `refused at once, took ${ms} ms`);
    assert.equal(w.dp.maps.counters().ingress_collision - before.ingress_collision, 1n);
    const used = await first.use();
    assert.equal(used.ok, true, `the first connection is untouched: ${JSON.stringify(used)}`);
    // Once the first is gone, the same client port reaches the other pod port.
    await until("the first connection's record is gone", () => w.dp.maps.tableFill().pair_orig_dst === 0);
    const again = await nettool({ netns: w.pods.r!.ns }, [
      "client",
      `${a!.ip}:8080`,
      "--sport",
      String(sport),
    ]);
    assert.equal(again.ok, true, JSON.stringify(again));
  });
}
