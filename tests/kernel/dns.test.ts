// DNS capture: an application's UDP queries to port 53 go to its proxy's DNS listener on loopback,
// and the replies carry the resolver's address again, so the application cannot tell. Stand-ins: a
// UDP responder in pod a on 127.0.0.1:<dns port> running as the proxy, and a "resolver" in pod r on
// port 53; each answers with its own name, so the reply says who answered.
import assert from "node:assert/strict";
import {
  APP_UID,
  createWorld,
  nettool,
  Scope,
  startDnsProxy,
  startNettool,
  type World,
} from "../../testbed/mod.ts";

interface Reply {
  from: string;
  server: string;
  query: string;
  peer: string;
}

async function dnsWorld(scope: Scope, dnsCapture: boolean) {
  const w = await createWorld(scope, { dnsCapture, outside: { r: [8080] } });
  const { a, r } = w.pods as Record<string, { ns: string; ip: string }>;
  const standIn = await startDnsProxy(scope, { netns: a!.ns, cgroup: w.cgroup, mesh: w.mesh });
  for (const port of [53, 5353]) {
    const p = startNettool(scope, { netns: r!.ns }, [
      "udp-server",
      "--name",
      `resolver-${port}`,
      "--port",
      String(port),
    ]);
    await p.waitFor((l) => l.event === "listening", 5000, `resolver ${port}`);
  }
  return { w, r: r!.ip, standIn };
}

async function query(
  w: World,
  pod: string,
  target: string,
  opts: { connect?: boolean; uid?: number } = {},
): Promise<{ res: Record<string, unknown>; replies: Reply[] }> {
  const args = ["udp-client", target, "--count", "2", ...(opts.connect ? ["--connect"] : [])];
  const res = await nettool({ netns: w.pods[pod]!.ns, cgroup: w.cgroup, uid: opts.uid ?? APP_UID }, args);
  assert.equal(res.ok, true, `${pod} -> ${target}: ${JSON.stringify(res)}`);
  const replies = res.replies as Reply[];
  assert.equal(replies.length, 2);
  return { res, replies };
}

function counterDelta(w: World, before: ReturnType<World["dp"]["maps"]["counters"]>) {
  const now = w.dp.maps.counters();
  return { redirect: now.dns_redirect - before.dns_redirect, restore: now.dns_restore - before.dns_restore };
}

Deno.test("kernel: DNS capture answers from the pod's proxy and restores the resolver's address", async (t) => {
  await using scope = new Scope();
  const { w, r } = await dnsWorld(scope, true);

  await t.step("unconnected socket: sendto/recvfrom", async () => {
    const before = w.dp.maps.counters();
    const { replies } = await query(w, "a", `${r}:53`);
    for (const rep of replies) {
      assert.equal(rep.server, "proxy-dns", JSON.stringify(rep));
      assert.equal(rep.from, `${r}:53`, "recvfrom reports the resolver, not loopback");
      // The stand-in saw the query coming over loopback from the app.
      assert.match(rep.peer, /^127\.0\.0\.1:\d+$/);
    }
    assert.deepEqual(counterDelta(w, before), { redirect: 2n, restore: 2n }, "each sendto and each reply");
  });

  await t.step("connected socket: connect/send/recvfrom", async () => {
    const before = w.dp.maps.counters();
    const { replies } = await query(w, "a", `${r}:53`, { connect: true });
    for (const rep of replies) {
      assert.equal(rep.server, "proxy-dns", JSON.stringify(rep));
      assert.equal(rep.from, `${r}:53`);
    }
    // connect() chose the destination once; both replies were given their source back.
    assert.deepEqual(counterDelta(w, before), { redirect: 1n, restore: 2n });
  });

  await t.step("the proxy's own queries reach the resolver", async () => {
    for (const connect of [false, true]) {
      const before = w.dp.maps.counters();
      const { replies } = await query(w, "a", `${r}:53`, { connect, uid: w.mesh.proxyUid });
      for (const rep of replies) {
        assert.equal(rep.server, "resolver-53", `connect=${connect}: ${JSON.stringify(rep)}`);
        assert.equal(rep.from, `${r}:53`);
      }
      assert.deepEqual(counterDelta(w, before), { redirect: 0n, restore: 0n });
    }
  });

  await t.step("other UDP ports are not DNS", async () => {
    const { replies } = await query(w, "a", `${r}:5353`);
    assert.deepEqual(replies.map((x) => x.server), ["resolver-5353", "resolver-5353"]);
  });

  await t.step("a pod without a DNS listener keeps resolving directly", async () => {
    // Pod b is meshed but nothing listens on its DNS port: capturing would black-hole its queries.
    for (const connect of [false, true]) {
      const { replies } = await query(w, "b", `${r}:53`, { connect });
      assert.deepEqual(replies.map((x) => x.server), ["resolver-53", "resolver-53"], `connect=${connect}`);
    }
  });
});

Deno.test("kernel: with DNS capture off the application reaches the resolver directly", async () => {
  await using scope = new Scope();
  const { w, r, standIn } = await dnsWorld(scope, false);
  for (const connect of [false, true]) {
    const { replies } = await query(w, "a", `${r}:53`, { connect });
    for (const rep of replies) {
      assert.equal(rep.server, "resolver-53", `connect=${connect}: ${JSON.stringify(rep)}`);
      assert.equal(rep.from, `${r}:53`);
    }
  }
  assert.equal(standIn.lines.filter((l) => l.event === "query").length, 0, "the stand-in got nothing");
  assert.equal(w.dp.maps.counters().dns_redirect, 0n);
});
