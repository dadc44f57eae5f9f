// The places where a real Istio pod differs from a naive stand-in, on the real kernel: the proxy's
// inbound passthrough (a socket bound to 127.0.0.6 calling the pod's own IP), the proxy calling its own
// pod, AF_INET6 sockets talking to IPv4 peers as ::ffff:a.b.c.d (the JDK's default), and the node's own
// network namespace, which is never captured whatever listens there.
import assert from "node:assert/strict";
import { withNetns } from "../../src/netns/netns.ts";
import { currentNetnsCookie } from "../../src/netns/cookie.ts";
import { ISTIO_ANNOTATIONS as I } from "../../src/mesh/policy.ts";
import {
  APP_UID,
  createWorld,
  inNs,
  nettool,
  Scope,
  startDnsProxy,
  startNettool,
  type World,
} from "../../testbed/mod.ts";

const PROXY = 1337;

/** Pod a meshed and identified, its app serving on 8080 and 15008; r outside the mesh. */
async function podWorld(scope: Scope, opts: { sockmap?: boolean } = {}) {
  const w = await createWorld(scope, { meshed: ["a"], outside: { r: [8080, 9090] }, sockmap: opts.sockmap });
  for (const port of [8080, 15008]) {
    const p = startNettool(scope, { netns: w.pods.a!.ns }, [
      "server",
      "--name",
      `a-app-${port}`,
      "--port",
      `${port}`,
    ]);
    await p.waitFor((l) => l.event === "listening", 5000, `a app ${port}`);
  }
  return w;
}

interface Seen {
  ok: boolean;
  /** Who answered: the server's name, or "sidecar-<kind>" when only the sidecar took it. */
  server: string;
  /** The peer the final server saw. */
  serverPeer: string;
  /** Sidecar listeners that accepted it, with the original destination they read. */
  sidecar: { kind: string; orig: string; peer: string }[];
  res: Record<string, unknown>;
}

async function probe(
  w: World,
  target: string,
  o: { uid?: number; gid?: number; args?: string[] } = {},
): Promise<Seen> {
  const from = w.sidecars.a!.lines.length;
  const res = await w.client("a", target, { uid: o.uid ?? APP_UID, gid: o.gid, args: o.args });
  // The sidecar's lines come through a pipe: let them arrive.
  await new Promise((r) => setTimeout(r, 100));
  const hello = res.hello as { server: string; peer: string } | null;
  return {
    ok: res.ok === true,
    server: hello?.server ?? "",
    serverPeer: hello?.peer ?? "",
    sidecar: w.accepted("a", from).map((l) => ({
      kind: String(l.kind),
      orig: String(l.orig),
      peer: String(l.peer),
    })),
    res,
  };
}

const ipOf = (hostPort: string) => hostPort.replace(/^\[?(::ffff:)?/, "").replace(/\]?:\d+$/, "");

Deno.test("kernel: a socket bound to 127.0.0.6 reaches the pod's own app once, never the sidecar", async () => {
  await using scope = new Scope();
  const w = await podWorld(scope);
  const a = w.pods.a!;
  for (const identified of [false, true]) {
    if (identified) w.identify("a");
    for (const [uid, gid] of [[PROXY, PROXY], [APP_UID, APP_UID], [APP_UID, PROXY]]) {
      const before = w.dp.maps.counters();
      for (
        const args of [
          ["--bind", "127.0.0.6"],
          ["--family", "inet6", "--bind", "::ffff:127.0.0.6"],
        ]
      ) {
        const target = args.includes("inet6") ? `[::ffff:${a.ip}]:8080` : `${a.ip}:8080`;
        const s = await probe(w, target, { uid, gid, args });
        const what = `identified ${identified}, uid ${uid} gid ${gid}, ${args.join(" ")}`;
        assert.equal(s.ok, true, `${what}: ${JSON.stringify(s.res)}`);
        assert.equal(s.server, "a-app-8080", what);
        assert.equal(ipOf(s.serverPeer), "127.0.0.6", what);
        assert.deepEqual(s.sidecar, [], what);
      }
      const after = w.dp.maps.counters();
      assert.equal(after.connect_passthrough - before.connect_passthrough, 2n);
      assert.equal(after.connect_inbound - before.connect_inbound, 0n);
    }
  }
});

Deno.test("kernel: the proxy calling its own pod goes to its inbound port as Istio's rules send it", async () => {
  await using scope = new Scope();
  const w = await podWorld(scope);
  const a = w.pods.a!;
  w.identify("a", { [I.excludeOutboundPorts]: "9090" });
  // By uid: inbound, whatever the pod's inbound annotations say (iptables jumps straight there).
  let s = await probe(w, `${a.ip}:8080`, { uid: PROXY });
  assert.deepEqual(s.sidecar.map((x) => [x.kind, x.orig]), [["inbound", `${a.ip}:8080`]]);
  assert.equal(ipOf(s.sidecar[0]!.peer), a.ip);
  s = await probe(w, `127.0.0.5:8080`, { uid: PROXY });
  assert.deepEqual(s.sidecar.map((x) => [x.kind, x.orig]), [["inbound", "127.0.0.5:8080"]]);
  // The tunnel port, 127.0.0.1 and the pod's excluded outbound ports go direct.
  s = await probe(w, `${a.ip}:15008`, { uid: PROXY });
  assert.deepEqual([s.ok, s.server, s.sidecar], [true, "a-app-15008", []]);
  s = await probe(w, `127.0.0.1:8080`, { uid: PROXY });
  assert.deepEqual([s.ok, s.server, s.sidecar], [true, "a-app-8080", []]);
  w.identify("a", { [I.excludeOutboundPorts]: "8080" });
  s = await probe(w, `${a.ip}:8080`, { uid: PROXY });
  assert.deepEqual([s.ok, s.server, s.sidecar], [true, "a-app-8080", []]);
  w.identify("a");
  // By group only, and the app: direct (iptables' loopback rules match the uid first).
  for (const [uid, gid] of [[APP_UID, PROXY], [APP_UID, APP_UID]]) {
    s = await probe(w, `${a.ip}:8080`, { uid, gid });
    assert.deepEqual([s.ok, s.server, s.sidecar], [true, "a-app-8080", []], `uid ${uid} gid ${gid}`);
    assert.equal(ipOf(s.serverPeer), a.ip);
  }
});

for (const sockmap of [true, false]) {
  Deno.test(`kernel: AF_INET6 sockets to ::ffff:a.b.c.d are intercepted like AF_INET (fast path ${sockmap ? "on" : "off"})`, async () => {
    await using scope = new Scope();
    const w = await podWorld(scope, { sockmap });
    const { a, r } = w.pods as Record<string, { ip: string }>;
    w.identify("a", { [I.excludeOutboundPorts]: "9090" });
    const before = w.dp.maps.counters();
    const s = await probe(w, `[::ffff:${r!.ip}]:8080`, {
      args: ["--family", "inet6", "--ask-origdst"],
      uid: APP_UID,
    });
    assert.equal(s.ok, true, JSON.stringify(s.res));
    assert.deepEqual(s.sidecar.map((x) => [x.kind, x.orig]), [["outbound", `${r!.ip}:8080`]]);
    // bpf_bind kept the pod IP as the source, as REDIRECT would.
    assert.equal(ipOf(s.sidecar[0]!.peer), a!.ip);
    assert.equal(ipOf(s.serverPeer), a!.ip, "the server sees the sidecar's connection from the pod IP");
    // The application sees its original peer, and both forms of SO_ORIGINAL_DST answer.
    assert.equal(s.res.peer, `[::ffff:${r!.ip}]:8080`);
    assert.equal(s.res.origdst_ip, `${r!.ip}:8080`);
    assert.equal(s.res.origdst_ip6, `[::ffff:${r!.ip}]:8080`);
    const after = w.dp.maps.counters();
    assert.equal(after.connect_redirect - before.connect_redirect, 1n);
    if (sockmap) assert.ok(after.sockmap_add - before.sockmap_add >= 2n, "both ends joined the fast path");

    // The pod's annotations apply to them too, and its own IP and loopback go direct.
    let d = await probe(w, `[::ffff:${r!.ip}]:9090`, { args: ["--family", "inet6"] });
    assert.deepEqual([d.ok, d.server, d.sidecar], [true, "r", []]);
    assert.equal(ipOf(d.serverPeer), a!.ip);
    d = await probe(w, `[::ffff:${a!.ip}]:8080`, { args: ["--family", "inet6"] });
    assert.deepEqual([d.ok, d.server, d.sidecar], [true, "a-app-8080", []]);
    d = await probe(w, `[::ffff:127.0.0.1]:8080`, { args: ["--family", "inet6"] });
    assert.deepEqual([d.ok, d.server, d.sidecar], [true, "a-app-8080", []]);
    // The proxy's own AF_INET6 connections are its own.
    d = await probe(w, `[::ffff:${r!.ip}]:8080`, { args: ["--family", "inet6"], uid: PROXY });
    assert.deepEqual([d.ok, d.server, d.sidecar], [true, "r", []]);
  });
}

Deno.test("kernel: AF_INET6 UDP queries to ::ffff:resolver:53 follow DNS capture", async () => {
  await using scope = new Scope();
  const w = await createWorld(scope, { dnsCapture: true, meshed: ["a"], outside: { r: [8080] } });
  const { a, r } = w.pods as Record<string, { ns: string; ip: string }>;
  await startDnsProxy(scope, { netns: a!.ns, cgroup: w.cgroup, mesh: w.mesh });
  const resolver = startNettool(scope, { netns: r!.ns }, [
    "udp-server",
    "--name",
    "resolver",
    "--port",
    "53",
  ]);
  await resolver.waitFor((l) => l.event === "listening", 5000, "resolver");
  for (const connect of [false, true]) {
    const res = await nettool({ netns: a!.ns, cgroup: w.cgroup, uid: APP_UID }, [
      "udp-client",
      `[::ffff:${r!.ip}]:53`,
      "--family",
      "inet6",
      "--count",
      "2",
      ...(connect ? ["--connect"] : []),
    ]);
    assert.equal(res.ok, true, JSON.stringify(res));
    const replies = res.replies as { from: string; server: string }[];
    assert.deepEqual(replies.map((x) => x.server), ["proxy-dns", "proxy-dns"], `connected ${connect}`);
    // The application still sees the resolver's address.
    assert.deepEqual(replies.map((x) => x.from), [`[::ffff:${r!.ip}]:53`, `[::ffff:${r!.ip}]:53`]);
    if (connect) assert.equal(res.peer, `[::ffff:${r!.ip}]:53`);
  }
});

Deno.test("kernel: nothing is captured in the node's own network namespace, whatever listens there", async () => {
  await using scope = new Scope();
  const w = await podWorld(scope);
  const node = w.node;
  const r = w.pods.r!;
  // The node's namespace of this test plays the host: a listener on 127.0.0.1:15001 there (a host
  // process, or a hostNetwork pod) must not capture the host's own connections to a pod.
  const hostListener = startNettool(scope, { netns: node.ns, cgroup: w.cgroup, uid: PROXY }, [
    "proxy",
    "--listen",
    `outbound=${w.mesh.outboundPort}`,
  ]);
  await hostListener.waitFor((l) => l.event === "listening", 5000, "host listener");
  const nodeCookie = withNetns(`/run/netns/${node.ns}`, () => currentNetnsCookie());
  const hostConnect = async (uid: number) => {
    const from = hostListener.lines.length;
    const res = await nettool({ netns: node.ns, cgroup: w.cgroup, uid }, ["client", `${r.ip}:8080`]);
    await new Promise((res) => setTimeout(res, 100));
    const captured = hostListener.lines.slice(from).filter((l) => l.event === "accepted").length;
    return { res, captured };
  };
  const setHost = (hostNetns: bigint) =>
    w.dp.maps.setMeshConfig(w.mesh, { dnsCapture: false, cniMode: false, sockmap: true, hostNetns });

  // Without knowing which namespace is the node's, the listener captures host traffic: the flaw the
  // check exists for (so this test can tell the check from its absence).
  setHost(0n);
  const open = await hostConnect(APP_UID);
  assert.equal(open.captured, 1, `captured without the check: ${JSON.stringify(open.res)}`);

  setHost(nodeCookie);
  for (const uid of [APP_UID, 0]) {
    const before = w.dp.maps.counters();
    const { res, captured } = await hostConnect(uid);
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.equal((res.hello as { server: string }).server, "r", `uid ${uid} reached the pod directly`);
    assert.equal(captured, 0, `uid ${uid}: the host listener took nothing`);
    const after = w.dp.maps.counters();
    assert.equal(after.connect_host - before.connect_host, 1n);
    assert.equal(after.connect_redirect - before.connect_redirect, 0n);
  }
  // Pods are still captured.
  const s = await probe(w, `${r.ip}:8080`);
  assert.deepEqual(s.sidecar.map((x) => x.kind), ["outbound"]);
});

// The sidecar here listens on 0.0.0.0 only, as an IPv4-only proxy does: redirecting IPv6 to [::1] would
// reach no listener, so IPv6 must be left alone (tests/kernel/ipv6.test.ts has a dual-stack proxy).
Deno.test("kernel: native IPv6 passes untouched while the proxy takes no IPv6 (no half-handling)", async () => {
  await using scope = new Scope();
  const w = await podWorld(scope);
  const { a, r } = w.pods as Record<string, { ns: string; ip: string }>;
  const v6 = (ip: string) => `fd00:${w.node.subnet.split(".")[2]}::${ip.split(".")[3]}`;
  for (const p of [a!, r!]) {
    await inNs(p.ns, "ip", ["-6", "addr", "add", `${v6(p.ip)}/64`, "dev", "eth0", "nodad"]);
  }
  const srv = startNettool(scope, { netns: r!.ns }, [
    "server",
    "--name",
    "r6",
    "--bind",
    "::",
    "--port",
    "8086",
  ]);
  await srv.waitFor((l) => l.event === "listening", 5000, "r IPv6 server");
  w.identify("a");
  const before = w.dp.maps.counters();
  const s = await probe(w, `[${v6(r!.ip)}]:8086`, { args: ["--family", "inet6", "--ask-origdst"] });
  assert.equal(s.ok, true, JSON.stringify(s.res));
  assert.equal(s.server, "r6");
  assert.deepEqual(s.sidecar, []);
  assert.equal(s.serverPeer.replace(/:\d+$/, ""), `[${v6(a!.ip)}]`);
  assert.equal(s.res.peer, `[${v6(r!.ip)}]:8086`, "getpeername shows the real peer");
  assert.equal(s.res.origdst_ip6, null, "no original destination is invented for it");
  const after = w.dp.maps.counters();
  assert.equal(after.connect_redirect - before.connect_redirect, 0n);
  assert.equal(after.origdst_hit - before.origdst_hit, 0n);
});
