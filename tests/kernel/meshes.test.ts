// The same datapath serves every supported mesh; only the numbers change (outbound and inbound ports,
// the proxy's uid). For each mesh: an application's connection reaches that mesh's outbound port with
// its original destination, the proxy's own connections are not sent back to it, and a connection to
// a meshed pod of this node arrives on that pod's inbound port.
import assert from "node:assert/strict";
import { MESH_MODES } from "../../src/mesh/types.ts";
import { meshParams } from "../../src/mesh/modes.ts";
import { podPolicy } from "../../src/mesh/policy.ts";
import { createWorld, Scope, startNettool } from "../../testbed/mod.ts";

const ipRe = (ip: string) => new RegExp(`^${ip.replaceAll(".", "\\.")}:\\d+$`);

Deno.test("kernel: every mesh mode redirects to its own ports and exempts its own proxy uid", async (t) => {
  for (const mode of MESH_MODES) {
    await t.step(mode, async (t) => {
      await using scope = new Scope();
      const w = await createWorld(scope, { mode, outside: { r: [8080] } });
      const { a, b, r } = w.pods as Record<string, { ip: string; ns: string }>;
      const mesh = meshParams(mode);

      await t.step("outbound to the mesh's outbound port, with the original destination", async () => {
        const before = w.dp.maps.counters();
        const res = await w.client("a", `${r!.ip}:8080`);
        assert.equal(res.ok, true, JSON.stringify(res));
        const hello = res.hello as Record<string, string>;
        assert.equal(hello.server, "r");
        const acc = w.accepted("a");
        // One accept only: the proxy's own upstream connection (same destination) was not looped back.
        assert.equal(acc.length, 1, JSON.stringify(w.sidecars.a!.lines));
        assert.equal(acc[0]!.kind, "outbound");
        assert.equal(acc[0]!.local, `127.0.0.1:${mesh.outboundPort}`);
        assert.equal(acc[0]!.orig, `${r!.ip}:8080`);
        assert.equal(acc[0]!.uid, mesh.proxyUid);
        assert.match(hello.peer!, ipRe(a!.ip), "the upstream connection came from the pod to r directly");
        const after = w.dp.maps.counters();
        assert.equal(after.connect_redirect - before.connect_redirect, 1n);
        assert.ok(after.origdst_hit - before.origdst_hit >= 1n);
      });

      await t.step("another mesh's proxy uid is an ordinary application here", async () => {
        const other = MESH_MODES.map(meshParams).find((m) => m.proxyUid !== mesh.proxyUid)!.proxyUid;
        const from = w.sidecars.a!.lines.length;
        const res = await w.client("a", `${r!.ip}:8080`, { uid: other });
        assert.equal(res.ok, true, JSON.stringify(res));
        assert.equal(w.accepted("a", from).length, 1, `uid ${other} is captured in ${mode}`);
      });

      await t.step("same-node pod to pod arrives on the target's inbound port", async () => {
        const srv = startNettool(scope, { netns: b!.ns, cgroup: w.cgroup, uid: 2000 }, [
          "server",
          "--name",
          "b",
          "--port",
          "8080",
        ]);
        await srv.waitFor((l) => l.event === "listening");
        w.dp.maps.putPod(b!.ip, podPolicy({}, mode).policy);
        const fromA = w.sidecars.a!.lines.length, fromB = w.sidecars.b!.lines.length;
        const before = w.dp.maps.counters();
        const res = await w.client("a", `${b!.ip}:8080`);
        const seen = JSON.stringify(w.sidecars.b!.lines.slice(fromB));
        assert.deepEqual(w.loops("b", fromB), [], `b's inbound hop came back to its sidecar: ${seen}`);
        assert.equal(res.ok, true, `${JSON.stringify(res)}; b's sidecar: ${seen}`);
        const hello = res.hello as Record<string, string>;
        assert.equal(hello.server, "b");
        // Envoy's way: to the pod's own IP and port, from 127.0.0.6, which no capture rule takes.
        assert.match(hello.peer!, /^127\.0\.0\.6:/, "b's proxy delivered it from 127.0.0.6");
        const up = w.sidecars.b!.lines.slice(fromB).filter((l) => l.event === "upstream");
        assert.deepEqual(up.map((l) => [l.target, l.source]), [[`${b!.ip}:8080`, hello.peer]]);
        const out = w.accepted("a", fromA);
        assert.equal(out.length, 1);
        assert.equal(out[0]!.orig, `${b!.ip}:8080`);
        const inb = w.accepted("b", fromB);
        assert.equal(inb.length, 1, JSON.stringify(w.sidecars.b!.lines));
        assert.equal(inb[0]!.kind, "inbound");
        assert.equal(inb[0]!.local, `${b!.ip}:${mesh.inboundPort}`);
        assert.equal(inb[0]!.orig, `${b!.ip}:8080`);
        assert.equal(inb[0]!.uid, mesh.proxyUid);
        assert.match(String(inb[0]!.peer), ipRe(a!.ip));
        const after = w.dp.maps.counters();
        assert.equal(after.connect_inbound - before.connect_inbound, 1n);
      });
    });
  }
});
