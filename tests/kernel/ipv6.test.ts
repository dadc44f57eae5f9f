// Native IPv6 from dual-stack pods on the real kernel: connect6 with Istio's ip6tables semantics (::1 and
// ::6 where IPv4 has 127.0.0.1 and 127.0.0.6, the pod's own IPv6, IPv6 ranges), the redirect to [::1]
// with the pod's IPv6 bound, SO_ORIGINAL_DST at SOL_IPV6, getpeername6, the sockmap fast path, a
// same-node proxy reaching another pod's inbound port by its IPv6, and DNS over IPv6. Every connection
// is also put to the reference model (src/mesh/decide.ts), which must agree with what happened.
import assert from "node:assert/strict";
import { type CallerPod, decideConnect } from "../../src/mesh/decide.ts";
import { ISTIO_ANNOTATIONS as I } from "../../src/mesh/policy.ts";
import type { PodPolicy } from "../../src/mesh/types.ts";
import {
  APP_UID,
  createWorld,
  nettool,
  Scope,
  startDnsProxy,
  startNettool,
  type World,
} from "../../testbed/mod.ts";

const PROXY = 1337;

async function dualWorld(scope: Scope, opts: { sockmap?: boolean; dnsCapture?: boolean } = {}) {
  const w = await createWorld(scope, {
    meshed: ["a", "b"],
    outside: { r: [8080, 9090] },
    ipv6: true,
    sockmap: opts.sockmap,
    dnsCapture: opts.dnsCapture,
  });
  for (const pod of ["a", "b"]) {
    for (const port of [8080, 9090, 15008]) {
      const p = startNettool(scope, { netns: w.pods[pod]!.ns }, [
        "server",
        "--name",
        `${pod}-app-${port}`,
        "--bind",
        "::",
        "--port",
        `${port}`,
      ]);
      await p.waitFor((l) => l.event === "listening", 5000, `${pod} app ${port}`);
    }
  }
  return w;
}

interface Seen {
  ok: boolean;
  server: string;
  serverPeer: string;
  /** What the calling pod's sidecar accepted. */
  sidecar: { kind: string; orig: string; peer: string }[];
  /** What the other pods' sidecars accepted. */
  others: { kind: string; orig: string; peer: string }[];
  res: Record<string, unknown>;
}

async function probe(
  w: World,
  target: string,
  o: { uid?: number; gid?: number; args?: string[]; pod?: string } = {},
): Promise<Seen> {
  const pod = o.pod ?? "a";
  const from = Object.fromEntries(Object.entries(w.sidecars).map(([p, sc]) => [p, sc.lines.length]));
  const res = await w.client(pod, target, {
    uid: o.uid ?? APP_UID,
    gid: o.gid,
    args: ["--family", "inet6", ...(o.args ?? [])],
  });
  await new Promise((r) => setTimeout(r, 100));
  const hello = res.hello as { server: string; peer: string } | null;
  return {
    ok: res.ok === true,
    server: hello?.server ?? "",
    serverPeer: hello?.peer ?? "",
    sidecar: w.accepted(pod, from[pod]).map(line),
    others: Object.keys(w.sidecars).filter((p) => p !== pod).flatMap((p) => w.accepted(p, from[p]).map(line)),
    res,
  };
}

const line = (l: Record<string, unknown>) => ({
  kind: String(l.kind),
  orig: String(l.orig),
  peer: String(l.peer),
});

/** The address of "[addr]:port" or "addr:port" (the sidecar writes IPv6 peers unbracketed). */
const hostOf = (hostPort: string) => hostPort.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");

/** What the datapath did, in the reference model's words. */
function verdictOf(s: Seen): string {
  if (s.sidecar.length) return s.sidecar[0]!.kind === "outbound" ? "redirect" : "inbound";
  // The proxy sent straight to another pod's inbound port.
  return s.others.some((x) => x.kind === "inbound") ? "inbound" : "pass";
}

/** Probes a connection and holds both the kernel and the reference model to `want`. */
async function expect(
  w: World,
  caller: { pod: CallerPod; localPod?: (ip: string) => PodPolicy | undefined },
  dst: { ip: string; port: number },
  want: "redirect" | "inbound" | "pass",
  o: { uid?: number; gid?: number; bind?: string } = {},
): Promise<Seen> {
  const args = o.bind ? ["--bind", o.bind] : [];
  const s = await probe(w, `[${dst.ip}]:${dst.port}`, { uid: o.uid, gid: o.gid, args });
  const uid = o.uid ?? APP_UID, gid = o.gid ?? uid;
  const role = uid === PROXY ? "proxy" : gid === PROXY ? "proxy-group" : "app";
  const what = `${role}${o.bind ? ` bound to ${o.bind}` : ""} -> [${dst.ip}]:${dst.port}`;
  const model = decideConnect(w.mesh, caller.pod, {
    caller: role,
    family: "inet6",
    source: o.bind,
    dstIp: dst.ip,
    dstPort: dst.port,
  }, caller.localPod);
  assert.equal(model, want, `${what}: the reference model`);
  assert.equal(s.ok, true, `${what}: ${JSON.stringify(s.res)}`);
  assert.equal(verdictOf(s), want, `${what}: the kernel (${JSON.stringify(s.sidecar)})`);
  return s;
}

for (const sockmap of [true, false]) {
  Deno.test(`kernel: native IPv6 outbound goes to [::1] with the pod's IPv6 bound, SO_ORIGINAL_DST at SOL_IPV6 (fast path ${sockmap ? "on" : "off"})`, async () => {
    await using scope = new Scope();
    const w = await dualWorld(scope, { sockmap });
    const { a, r } = w.pods as Record<string, { ip: string; ip6: string }>;
    const { policy } = w.identify("a", { [I.excludeOutboundPorts]: "9090" });
    const pod: CallerPod = { ip: a!.ip, ip6: a!.ip6, policy };
    const before = w.dp.maps.counters();
    const s = await probe(w, `[${r!.ip6}]:8080`, { args: ["--ask-origdst"] });
    assert.equal(s.ok, true, JSON.stringify(s.res));
    assert.deepEqual(s.sidecar.map((x) => [x.kind, x.orig]), [["outbound", `${r!.ip6}:8080`]]);
    assert.equal(hostOf(s.sidecar[0]!.peer), a!.ip6, "bpf_bind kept the pod's IPv6 as the source");
    assert.equal(s.server, "r");
    assert.equal(hostOf(s.serverPeer), a!.ip6, "the server sees the pod's IPv6");
    assert.equal(s.res.peer, `[${r!.ip6}]:8080`, "getpeername shows the original peer");
    assert.equal(s.res.origdst_ip6, `[${r!.ip6}]:8080`);
    assert.equal(s.res.origdst_ip, null, "an IPv6 connection has no SOL_IP answer");
    const after = w.dp.maps.counters();
    assert.equal(after.connect_redirect - before.connect_redirect, 1n);
    assert.ok(after.origdst_hit - before.origdst_hit >= 2n, "client and sidecar both got an answer");
    if (sockmap) assert.ok(after.sockmap_add - before.sockmap_add >= 2n, "both ends joined the fast path");
    else assert.equal(after.sockmap_add - before.sockmap_add, 0n);
    // The connection's records went with it.
    await new Promise((res) => setTimeout(res, 200));
    assert.deepEqual(w.dp.maps.pairs().filter((p) => p.key.sip.includes(":")), []);

    const c = { pod };
    await expect(w, c, { ip: r!.ip6, port: 9090 }, "pass");
    await expect(w, c, { ip: a!.ip6, port: 8080 }, "pass");
    await expect(w, c, { ip: "::1", port: 8080 }, "pass");
    await expect(w, c, { ip: r!.ip6, port: 8080 }, "pass", { uid: PROXY });
    await expect(w, c, { ip: r!.ip6, port: 8080 }, "pass", { uid: APP_UID, gid: PROXY });
    // IPv4 is untouched by all this: the same pod's IPv4 connection is redirected as before.
    const s4 = await w.client("a", `${r!.ip}:8080`, { args: ["--ask-origdst"] });
    assert.equal(s4.ok, true, JSON.stringify(s4));
    assert.equal(s4.origdst_ip, `${r!.ip}:8080`);
  });
}

Deno.test("kernel: the proxy calling its own pod's IPv6 goes inbound; ::1, ::6 and the tunnel port go direct", async () => {
  await using scope = new Scope();
  const w = await dualWorld(scope);
  const { a } = w.pods as Record<string, { ip: string; ip6: string }>;
  const { policy } = w.identify("a", { [I.excludeOutboundPorts]: "9090" });
  const c = { pod: { ip: a!.ip, ip6: a!.ip6, policy } };
  const s = await expect(w, c, { ip: a!.ip6, port: 8080 }, "inbound", { uid: PROXY });
  assert.deepEqual(s.sidecar.map((x) => [x.kind, x.orig]), [["inbound", `${a!.ip6}:8080`]]);
  // The sidecar forwarded it from ::6, as Envoy does, and that hop was not captured again.
  assert.equal(s.server, "a-app-8080");
  assert.equal(hostOf(s.serverPeer), "::6");
  await expect(w, c, { ip: a!.ip6, port: 15008 }, "pass", { uid: PROXY });
  await expect(w, c, { ip: a!.ip6, port: 9090 }, "pass", { uid: PROXY });
  await expect(w, c, { ip: "::1", port: 8080 }, "pass", { uid: PROXY });
  await expect(w, c, { ip: a!.ip6, port: 8080 }, "pass", { uid: APP_UID, gid: PROXY });
  for (const uid of [PROXY, APP_UID]) {
    const before = w.dp.maps.counters();
    const d = await expect(w, c, { ip: a!.ip6, port: 8080 }, "pass", { uid, bind: "::6" });
    assert.equal(hostOf(d.serverPeer), "::6");
    assert.equal(w.dp.maps.counters().connect_passthrough - before.connect_passthrough, 1n);
  }
});

Deno.test("kernel: IPv6 ranges decide for IPv6 destinations, IPv4 ranges for IPv4 ones", async () => {
  await using scope = new Scope();
  const w = await dualWorld(scope);
  const { a, r } = w.pods as Record<string, { ip: string; ip6: string }>;
  const cases: [Record<string, string>, "redirect" | "pass", "redirect" | "pass"][] = [
    [{ [I.excludeOutboundIPRanges]: `${r!.ip6}/128` }, "pass", "redirect"],
    [{ [I.excludeOutboundIPRanges]: "fd00::/8, 192.0.2.0/24" }, "pass", "redirect"],
    [{ [I.includeOutboundIPRanges]: "10.0.0.0/8" }, "pass", "redirect"],
    [{ [I.includeOutboundIPRanges]: "fd00::/8" }, "redirect", "pass"],
    [
      { [I.includeOutboundIPRanges]: "2001:db8::/32", [I.includeOutboundPorts]: "8080" },
      "redirect",
      "redirect",
    ],
    [{ [I.excludeOutboundIPRanges]: "*" }, "pass", "pass"],
  ];
  for (const [ann, want6, want4] of cases) {
    const { policy, warnings } = w.identify("a", ann);
    assert.deepEqual(warnings, [], JSON.stringify(ann));
    await expect(w, { pod: { ip: a!.ip, ip6: a!.ip6, policy } }, { ip: r!.ip6, port: 8080 }, want6);
    const from = w.sidecars.a!.lines.length;
    const s4 = await w.client("a", `${r!.ip}:8080`);
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(s4.ok, true);
    assert.equal(
      w.accepted("a", from).length === 1 ? "redirect" : "pass",
      want4,
      `IPv4 under ${JSON.stringify(ann)}`,
    );
  }
});

Deno.test("kernel: a proxy reaches a same-node meshed pod's inbound port by its IPv6, by that pod's rules", async () => {
  await using scope = new Scope();
  const w = await dualWorld(scope);
  const { a, b } = w.pods as Record<string, { ip: string; ip6: string }>;
  const { policy } = w.identify("a");
  const bPolicy = w.identify("b", { [I.excludeInboundPorts]: "9090" }).policy;
  const localPod = (ip: string) => ip === b!.ip6 || ip === b!.ip ? bPolicy : undefined;
  const c = { pod: { ip: a!.ip, ip6: a!.ip6, policy }, localPod };
  const fromB = w.sidecars.b!.lines.length;
  // The app's connection goes to its own sidecar, whose upstream goes to b's inbound port.
  const s = await expect(w, c, { ip: b!.ip6, port: 8080 }, "redirect");
  assert.equal(s.server, "b-app-8080");
  const inB = w.accepted("b", fromB);
  assert.deepEqual(inB.map((l) => [l.kind, l.orig]), [["inbound", `${b!.ip6}:8080`]]);
  assert.equal(hostOf(String(inB[0]!.peer)), a!.ip6, "b's sidecar sees a's IPv6");
  await expect(w, c, { ip: b!.ip6, port: 8080 }, "inbound", { uid: PROXY });
  await expect(w, c, { ip: b!.ip6, port: 15008 }, "pass", { uid: PROXY });
  await expect(w, c, { ip: b!.ip6, port: 9090 }, "pass", { uid: PROXY });
});

Deno.test("kernel: a pod identified by its IPv6 alone gets its own rules and its IPv6 bound", async () => {
  await using scope = new Scope();
  const w = await dualWorld(scope);
  const { a, r } = w.pods as Record<string, { ip: string; ip6: string }>;
  const { policy } = w.identify("a", { [I.excludeOutboundPorts]: "9090" }, { ipv6Only: true });
  assert.equal(w.dp.maps.pods().has(a!.ip), false);
  assert.equal(w.dp.maps.pods().has(a!.ip6), true);
  const c = { pod: { ip: null, ip6: a!.ip6, policy } };
  const s = await expect(w, c, { ip: r!.ip6, port: 8080 }, "redirect");
  assert.equal(hostOf(s.serverPeer), a!.ip6);
  await expect(w, c, { ip: r!.ip6, port: 9090 }, "pass");
  await expect(w, c, { ip: a!.ip6, port: 8080 }, "inbound", { uid: PROXY });
});

Deno.test("kernel: a mark entry with only the pod's IPv4 (as CNI mode writes it) takes its IPv6 from the namespace entry", async () => {
  await using scope = new Scope();
  const w = await dualWorld(scope);
  const { a, r } = w.pods as Record<string, { ip: string; ip6: string }>;
  const { policy } = w.identify("a", { [I.excludeOutboundPorts]: "9090" }, { asCni: true });
  assert.equal([...w.dp.maps.markIps().values()][0]!.ip6, "", "the mark entry has no IPv6");
  const c = { pod: { ip: a!.ip, ip6: a!.ip6, policy } };
  const s = await expect(w, c, { ip: r!.ip6, port: 8080 }, "redirect");
  assert.equal(hostOf(s.sidecar[0]!.peer), a!.ip6, "the pod's IPv6 was bound: the sidecar sees it");
  await expect(w, c, { ip: a!.ip6, port: 8080 }, "pass");
  await expect(w, c, { ip: a!.ip6, port: 8080 }, "inbound", { uid: PROXY });
});

Deno.test("kernel: DNS capture over IPv6 sends queries to [::1] and restores the resolver's address", async () => {
  await using scope = new Scope();
  const w = await createWorld(scope, { dnsCapture: true, meshed: ["a"], outside: { r: [8080] }, ipv6: true });
  const { a, r } = w.pods as Record<string, { ns: string; ip: string; ip6: string }>;
  const standIn = await startDnsProxy(scope, { netns: a!.ns, cgroup: w.cgroup, mesh: w.mesh, bind: "::1" });
  const resolver = startNettool(scope, { netns: r!.ns }, [
    "udp-server",
    "--name",
    "resolver",
    "--bind",
    "::",
    "--port",
    "53",
  ]);
  await resolver.waitFor((l) => l.event === "listening", 5000, "resolver");
  for (const connect of [false, true]) {
    const before = w.dp.maps.counters();
    const res = await nettool({ netns: a!.ns, cgroup: w.cgroup, uid: APP_UID }, [
      "udp-client",
      `[${r!.ip6}]:53`,
      "--family",
      "inet6",
      "--count",
      "2",
      ...(connect ? ["--connect"] : []),
    ]);
    assert.equal(res.ok, true, JSON.stringify(res));
    const replies = res.replies as { from: string; server: string }[];
    assert.deepEqual(replies.map((x) => x.server), ["proxy-dns", "proxy-dns"], `connected ${connect}`);
    assert.deepEqual(replies.map((x) => x.from), [`[${r!.ip6}]:53`, `[${r!.ip6}]:53`]);
    if (connect) assert.equal(res.peer, `[${r!.ip6}]:53`);
    assert.ok(w.dp.maps.counters().dns_redirect - before.dns_redirect >= 1n);
  }
  // The proxy's own queries go to the resolver.
  const own = await nettool({ netns: a!.ns, cgroup: w.cgroup, uid: PROXY, gid: PROXY }, [
    "udp-client",
    `[${r!.ip6}]:53`,
    "--family",
    "inet6",
  ]);
  assert.deepEqual((own.replies as { server: string }[]).map((x) => x.server), ["resolver", "resolver"]);
  // Without a DNS listener on [::1] the query is left alone, not sent to a port nobody serves.
  standIn.kill();
  await standIn.done;
  const none = await nettool({ netns: a!.ns, cgroup: w.cgroup, uid: APP_UID }, [
    "udp-client",
    `[${r!.ip6}]:53`,
    "--family",
    "inet6",
  ]);
  assert.deepEqual((none.replies as { server: string }[]).map((x) => x.server), ["resolver", "resolver"]);
});
