// The sidecar-mode datapath on the real kernel: real TCP through namespaces, asserted from what the
// peers (test sidecars and servers) saw.
import assert from "node:assert/strict";
import { createWorld, Scope, startNettool } from "../../testbed/mod.ts";
import { podPolicy } from "../../src/mesh/policy.ts";

Deno.test("kernel: outbound redirect to the sidecar with SO_ORIGINAL_DST, and the sidecar is not looped", async () => {
  await using scope = new Scope();
  const w = await createWorld(scope);
  const r = w.pods.r!;
  const res = await w.client("a", `${r.ip}:8080`, { bytes: 4096 });
  assert.equal(res.ok, true, `client result ${JSON.stringify(res)}`);
  assert.equal((res.hello as Record<string, string>).server, "r");
  const acc = w.accepted("a");
  assert.equal(acc.length, 1, `sidecar a accepted ${JSON.stringify(acc)}`);
  assert.equal(acc[0]!.orig, `${r.ip}:8080`);
  assert.equal(acc[0]!.local, `127.0.0.1:${w.mesh.outboundPort}`);
  // As with iptables REDIRECT, the application sees the peer it asked for, not the proxy.
  assert.equal(res.peer, `${r.ip}:8080`, "getpeername() on the redirected socket");
  // The server saw the sidecar's own connection, from pod a's address: not sent back to the sidecar.
  assert.match(
    String((res.hello as Record<string, string>).peer),
    new RegExp(`^${w.pods.a!.ip.replaceAll(".", "\\.")}:`),
  );
  const c = w.dp.maps.counters();
  assert.ok(c.connect_redirect >= 1n, "connect_redirect counted");
  assert.ok(c.origdst_hit >= 1n, "origdst_hit counted");
});

Deno.test("kernel: without the programs attached the same connection goes direct", async () => {
  await using scope = new Scope();
  const w = await createWorld(scope, { attach: false });
  const res = await w.client("a", `${w.pods.r!.ip}:8080`);
  assert.equal(res.ok, true);
  assert.equal(w.accepted("a").length, 0, "nothing reached the sidecar");
});

Deno.test("kernel: loopback and processes outside the cgroup are untouched", async () => {
  await using scope = new Scope();
  const w = await createWorld(scope);
  const a = w.pods.a!;
  const local = startNettool(scope, { netns: a.ns }, [
    "server",
    "--name",
    "a-local",
    "--bind",
    "127.0.0.1",
    "--port",
    "9000",
  ]);
  await local.waitFor((l) => l.event === "listening");
  const res = await w.client("a", "127.0.0.1:9000");
  assert.equal(res.ok, true);
  assert.equal((res.hello as Record<string, string>).server, "a-local");
  const outside = await w.client("a", `${w.pods.r!.ip}:8080`, { outsideCgroup: true });
  assert.equal(outside.ok, true);
  assert.equal(w.accepted("a").length, 0, `sidecar saw ${JSON.stringify(w.accepted("a"))}`);
});

Deno.test("kernel: SO_ORIGINAL_DST for other sockets passes through untouched", async () => {
  await using scope = new Scope();
  const w = await createWorld(scope);
  // A plain connection in the cgroup (loopback, so not redirected): the kernel's own answer (ENOENT
  // without conntrack) must come back, not ours and not a clamped optlen.
  const a = w.pods.a!;
  const srv = startNettool(scope, { netns: a.ns }, ["server", "--bind", "127.0.0.1", "--port", "9001"]);
  await srv.waitFor((l) => l.event === "listening");
  const probe = startNettool(scope, { netns: a.ns, cgroup: w.cgroup, uid: 1000 }, [
    "origdst-probe",
    "127.0.0.1:9001",
  ]);
  await probe.done;
  const line = probe.lines.at(-1)!;
  assert.equal(line.orig, null, JSON.stringify(line));
  assert.match(String(line.error), /No such file|ENOENT|Errno 2/);
  assert.equal(line.tcp_info_ok, true, "an unrelated getsockopt (TCP_INFO) still answers in full");
});

Deno.test("kernel: same-node pod to pod goes to the server's inbound port, honouring its inbound rules", async (t) => {
  await using scope = new Scope();
  const w = await createWorld(scope);
  const { b } = w.pods as Record<string, { ip: string; ns: string }>;
  for (const port of [8080, 8081, w.mesh.alwaysExcludedInboundPorts[1]!]) {
    const s = startNettool(scope, { netns: b!.ns, cgroup: w.cgroup, uid: 2000 }, [
      "server",
      "--name",
      "b",
      "--port",
      String(port),
    ]);
    await s.waitFor((l) => l.event === "listening");
  }
  const { policy } = podPolicy({ "traffic.sidecar.istio.io/excludeInboundPorts": "8081" }, "istio");
  w.dp.maps.putPod(b!.ip, policy);

  await t.step("8080 goes through b's sidecar with the original destination, once, to the app", async () => {
    const from = w.sidecars.b!.lines.length;
    const res = await w.client("a", `${b!.ip}:8080`);
    const seen = JSON.stringify(w.sidecars.b!.lines.slice(from));
    // b's sidecar forwards as Envoy does, to b's own IP from 127.0.0.6: captured again, it would loop.
    assert.deepEqual(w.loops("b", from), [], `b's inbound hop came back to its sidecar: ${seen}`);
    assert.equal(res.ok, true, `${JSON.stringify(res)}; b's sidecar: ${seen}`);
    const acc = w.accepted("b", from);
    assert.equal(acc.length, 1, seen);
    assert.equal(acc[0]!.kind, "inbound");
    assert.equal(acc[0]!.orig, `${b!.ip}:8080`);
    assert.match(
      String((res.hello as Record<string, string>).peer),
      /^127\.0\.0\.6:/,
      "the app saw 127.0.0.6",
    );
  });
  await t.step("excluded 8081 and always-excluded ports reach b directly", async () => {
    for (const port of [8081, w.mesh.alwaysExcludedInboundPorts[1]!]) {
      const from = w.sidecars.b!.lines.length;
      const res = await w.client("a", `${b!.ip}:${port}`);
      assert.equal(res.ok, true, JSON.stringify(res));
      assert.equal(w.accepted("b", from).length, 0, `port ${port} must not reach b's sidecar`);
    }
  });
});
