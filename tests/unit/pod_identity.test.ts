// Pod identity without the kernel: listing and deduplicating namespaces, what a scan reads again,
// the desired cookie -> IP entries, and the fewest writes that reach them.
import assert from "node:assert/strict";
import { desiredIdentities, type IdentityPod, IdentityTracker } from "../../src/daemon/identity.ts";
import { desiredNodeState, NodeStateWriter } from "../../src/daemon/node_state.ts";
import { defaultPolicy } from "../../src/mesh/policy.ts";
import type { PodEntry } from "../../src/mesh/types.ts";
import { FakePodMaps } from "./fake_pod_maps.ts";
import {
  type FsOps,
  listNamespaces,
  NetnsDiscovery,
  type NetnsInfo,
  type NetnsRead,
  parseNsLink,
  podAddresses,
  readIpv6Addresses,
} from "../../src/netns/discover.ts";
import { LibcError } from "../../src/ffi/errors.ts";

const NSFS = 4;

/** A node: netns files (path -> inode) and processes (pid -> inode), changed by the tests. */
class FakeNode implements FsOps {
  files = new Map<string, { ino: number; ctimeMs: number; mounted: boolean }>();
  procs = new Map<number, number>();
  /** inode -> what entering it reads. */
  namespaces = new Map<number, NetnsRead>();
  reads: string[] = [];

  readDir(path: string): Iterable<string> {
    if (path === "/proc") return [...this.procs.keys()].map(String).concat(["self", "sys"]);
    const out = [];
    for (const f of this.files.keys()) {
      if (f.startsWith(`${path}/`)) out.push(f.slice(path.length + 1));
    }
    return out;
  }
  stat(path: string) {
    const f = this.files.get(path);
    if (!f) return undefined;
    return f.mounted ? { ino: f.ino, dev: NSFS, ctimeMs: f.ctimeMs } : { ino: 77, dev: 25, ctimeMs: 0 };
  }
  readLink(path: string): string | undefined {
    const m = /^\/proc\/(\d+)\/ns\/net$/.exec(path);
    const ino = m ? this.procs.get(Number(m[1])) : undefined;
    return ino === undefined ? undefined : `net:[${ino}]`;
  }
  read = (path: string): NetnsRead => {
    this.reads.push(path);
    const ino = this.stat(path)?.ino ?? Number(parseNsLink(this.readLink(path)));
    const r = this.namespaces.get(ino);
    if (!r) throw new LibcError(`open(${path})`, 2);
    return r;
  };
  addPod(path: string, ino: number, cookie: bigint, ip: string, pids: number[] = []) {
    this.files.set(path, { ino, ctimeMs: Number(cookie), mounted: true });
    for (const p of pids) this.procs.set(p, ino);
    this.namespaces.set(ino, {
      cookie,
      addresses: [{ ifName: "lo", ip: "127.0.0.1" }, { ifName: "eth0", ip }],
    });
  }
}

function discovery(node: FakeNode, exclude = ["1000"]) {
  return new NetnsDiscovery({
    netnsDirs: ["/run/netns", "/var/run/docker/netns"],
    exclude: new Set(exclude),
    nsfsDev: NSFS,
    fs: node,
    read: node.read,
  });
}

Deno.test("parseNsLink and podAddresses", () => {
  assert.equal(parseNsLink("net:[4026531840]"), "4026531840");
  assert.equal(parseNsLink("mnt:[4026531840]"), undefined);
  assert.equal(parseNsLink(undefined), undefined);
  assert.deepEqual(
    podAddresses([
      { ifName: "lo", ip: "127.0.0.1" },
      { ifName: "lo", ip: "10.0.0.9" },
      { ifName: "eth0", ip: "10.1.0.4" },
      { ifName: "eth0", ip: "10.1.0.4" },
      { ifName: "net1", ip: "10.2.0.4" },
    ]),
    ["10.1.0.4", "10.2.0.4"],
  );
});

Deno.test("listNamespaces: one candidate per inode, files before processes, never the host", () => {
  const node = new FakeNode();
  node.addPod("/run/netns/a", 11, 1n, "10.0.0.1", [200, 201]);
  node.files.set("/var/run/docker/netns/a-again", { ino: 11, ctimeMs: 5, mounted: true });
  node.addPod("/run/netns/b", 12, 2n, "10.0.0.2");
  node.procs.set(300, 13); // a namespace only a process holds
  node.procs.set(1, 1000); // the host's
  node.procs.set(400, 1000);
  node.files.set("/run/netns/new", { ino: 0, ctimeMs: 0, mounted: false });
  const { candidates, pending } = listNamespaces(
    { netnsDirs: ["/run/netns", "/var/run/docker/netns"], proc: "/proc", exclude: new Set(["1000"]) },
    NSFS,
    node,
  );
  assert.deepEqual([...candidates.keys()].sort(), ["11", "12", "13"]);
  assert.deepEqual(candidates.get("11")!.paths, [
    "/run/netns/a",
    "/var/run/docker/netns/a-again",
    "/proc/200/ns/net",
    "/proc/201/ns/net",
  ]);
  assert.deepEqual(candidates.get("13")!.paths, ["/proc/300/ns/net"]);
  assert.deepEqual(pending, ["/run/netns/new"], "a file not mounted yet is not a namespace");
});

Deno.test("NetnsDiscovery reads a namespace once, then again only when it matters", async (t) => {
  const node = new FakeNode();
  node.addPod("/run/netns/a", 11, 101n, "10.0.0.1", [200]);
  node.addPod("/run/netns/b", 12, 102n, "10.0.0.2");
  const d = discovery(node);

  await t.step("the first scan reads each namespace once, through its file", () => {
    const ns = d.scan(new Set(["10.0.0.1"]));
    assert.deepEqual(node.reads.sort(), ["/run/netns/a", "/run/netns/b"]);
    assert.deepEqual(ns.map((n) => [n.ino, n.cookie, n.ips]).sort(), [
      ["11", 101n, ["10.0.0.1"]],
      ["12", 102n, ["10.0.0.2"]],
    ]);
  });
  await t.step("nothing is read while every wanted IP is known", () => {
    node.reads = [];
    d.scan(new Set(["10.0.0.1", "10.0.0.2"]));
    d.scan(new Set(["10.0.0.1"]));
    assert.deepEqual(node.reads, []);
    assert.equal(d.lastStats.read, 0);
  });
  await t.step("a wanted IP nowhere yet: namespaces holding no wanted IP are read again", () => {
    node.namespaces.set(12, { cookie: 102n, addresses: [{ ifName: "eth0", ip: "10.0.0.3" }] });
    const ns = d.scan(new Set(["10.0.0.1", "10.0.0.3"]));
    assert.deepEqual(node.reads, ["/run/netns/b"], "a, which is matched, is not entered");
    assert.deepEqual(ns.find((n) => n.ino === "12")!.ips, ["10.0.0.3"]);
  });
  await t.step("a new namespace is read once", () => {
    node.reads = [];
    node.addPod("/run/netns/c", 13, 103n, "10.0.0.4");
    d.scan(new Set(["10.0.0.1"]));
    d.scan(new Set(["10.0.0.1"]));
    assert.deepEqual(node.reads, ["/run/netns/c"]);
  });
  await t.step("a vanished namespace is forgotten", () => {
    node.files.delete("/run/netns/c");
    const ns = d.scan(new Set(["10.0.0.1"]));
    assert.equal(ns.some((n) => n.ino === "13"), false);
  });
  await t.step("an inode reused by a new namespace between scans is read again", () => {
    node.reads = [];
    node.files.delete("/run/netns/b");
    node.addPod("/run/netns/d", 12, 104n, "10.0.0.5");
    const ns = d.scan(new Set(["10.0.0.1", "10.0.0.3"]));
    assert.deepEqual(node.reads, ["/run/netns/d"]);
    assert.deepEqual(ns.find((n) => n.ino === "12")!.cookie, 104n);
  });
  await t.step("a process-only namespace outlives the process it was first read through", () => {
    node.reads = [];
    node.procs.set(500, 14);
    node.procs.set(501, 14);
    node.namespaces.set(14, { cookie: 105n, addresses: [{ ifName: "eth0", ip: "10.0.0.6" }] });
    d.scan(new Set(["10.0.0.6"]));
    node.procs.delete(500);
    d.scan(new Set(["10.0.0.6"]));
    assert.deepEqual(node.reads, ["/proc/500/ns/net"], "pid 501 still proves it is the same namespace");
  });
  await t.step("a path that cannot be entered falls back to the next; an unreadable one is retried", () => {
    node.reads = [];
    node.files.set("/run/netns/e", { ino: 15, ctimeMs: 1, mounted: true });
    node.procs.set(600, 15);
    const real = node.read;
    node.read = (p) => {
      if (p === "/run/netns/e") {
        node.reads.push(p);
        throw new LibcError("setns", 22);
      }
      return real(p);
    };
    node.namespaces.set(15, { cookie: 106n, addresses: [{ ifName: "eth0", ip: "10.0.0.7" }] });
    const d2 = new NetnsDiscovery({
      netnsDirs: ["/run/netns"],
      exclude: new Set(),
      nsfsDev: NSFS,
      fs: node,
      read: (p) => node.read(p),
    });
    const ns = d2.scan(new Set());
    assert.equal(ns.find((n) => n.ino === "15")!.path, "/proc/600/ns/net");
    node.read = real;
  });
});

Deno.test("NetnsDiscovery.settling: quick rescans only while a new namespace could still change", () => {
  const node = new FakeNode();
  let now = 0;
  const d = new NetnsDiscovery({
    netnsDirs: ["/run/netns"],
    exclude: new Set(),
    nsfsDev: NSFS,
    fs: node,
    read: node.read,
    now: () => now,
  });
  node.files.set("/run/netns/x", { ino: 0, ctimeMs: 0, mounted: false });
  d.scan(new Set());
  assert.equal(d.settling(new Set()), 0, "a file being mounted");
  now = 5000;
  d.scan(new Set());
  assert.equal(d.settling(new Set()), undefined, "a stray file does not keep the scan fast");
  node.files.delete("/run/netns/x");
  node.addPod("/run/netns/p", 20, 1n, "10.0.0.1");
  node.namespaces.set(20, { cookie: 1n, addresses: [] }); // its address comes after the namespace
  d.scan(new Set(["10.0.0.1"]));
  now = 5200;
  assert.equal(d.settling(new Set(["10.0.0.1"])), 200, "its age");
  assert.equal(d.settling(new Set()), undefined, "nothing is missing");
  node.namespaces.set(20, { cookie: 1n, addresses: [{ ifName: "eth0", ip: "10.0.0.1" }] });
  d.scan(new Set(["10.0.0.1"]));
  assert.equal(d.settling(new Set(["10.0.0.1"])), undefined, "found");
});

function info(ino: string, cookie: bigint, ips: string[]): NetnsInfo {
  return { ino, path: `/run/netns/${ino}`, cookie, ips, firstSeen: 0, readAt: 0 };
}

Deno.test("desiredIdentities: meshed pods found in a namespace, plus the CNI's entries", () => {
  const d = desiredIdentities(
    [
      { namespace: "default", name: "a", ip: "10.0.0.1" },
      { namespace: "default", name: "b", ip: "10.0.0.2" }, // not in any namespace (yet)
      { namespace: "default", name: "c", ip: "10.0.0.3" },
    ],
    [
      info("1", 11n, ["10.0.0.1"]),
      info("2", 12n, ["10.9.9.9"]), // not a meshed pod's
      info("3", 13n, ["10.0.0.3"]),
      info("4", 14n, ["10.0.0.3"]), // the same IP twice: both namespaces act for it
    ],
    [{ cookie: 20n, ip: "10.0.0.8", namespace: "default", name: "cni" }, {
      cookie: 13n,
      ip: "10.0.0.3",
      namespace: "default",
      name: "c",
    }],
  );
  assert.deepEqual(
    [...d].map(([c, i]) => [c, i.ip, i.via, i.pod]).sort((x, y) => Number(x[0]) - Number(y[0])),
    [
      [11n, "10.0.0.1", "netns", "default/a"],
      [13n, "10.0.0.3", "cni", "default/c"],
      [14n, "10.0.0.3", "netns", "default/c"],
      [20n, "10.0.0.8", "cni", "default/cni"],
    ],
  );
});

Deno.test("desiredIdentities: a dual-stack pod is found by either IP, its entry carries both", () => {
  const pods = [
    { namespace: "default", name: "d", ip: "10.0.0.4", ip6: "fd00::4" },
    { namespace: "default", name: "six", ip: "", ip6: "fd00::6" },
  ];
  const d = desiredIdentities(pods, [info("1", 11n, ["fd00::4"]), info("2", 12n, ["fd00::6"])], []);
  assert.deepEqual(
    [...d].map(([c, i]) => [c, i.ip, i.ip6, i.pod]),
    [[11n, "10.0.0.4", "fd00::4", "default/d"], [12n, "", "fd00::6", "default/six"]],
  );
  // A CNI entry (by IPv4, from the CNI result) gets the pod's IPv6 from the pod source.
  const cni = desiredIdentities(pods, [], [{ cookie: 30n, ip: "10.0.0.4", namespace: "default", name: "d" }]);
  assert.deepEqual([...cni.values()].map((i) => [i.ip, i.ip6, i.via]), [["10.0.0.4", "fd00::4", "cni"]]);
});

Deno.test("readIpv6Addresses: global addresses only, as if_inet6 lists them", () => {
  const text = [
    "fd000105000000000000000000000010 02 40 00 80     eth0",
    "fe80000000000000a8bbccfffedd0011 02 40 20 80     eth0",
    "00000000000000000000000000000001 01 80 10 80       lo",
    "00000000000000000000000000000006 01 80 00 80       lo",
    "garbage",
  ].join("\n");
  const a = readIpv6Addresses(text);
  assert.deepEqual(a, [{ ifName: "eth0", ip: "fd00:105::10" }, { ifName: "lo", ip: "::6" }]);
  assert.deepEqual(podAddresses(a), ["fd00:105::10"], "lo never names a pod");
});

/** One pass as the daemon makes it: scan (when forced or the addresses changed), desired, write. */
function pass(
  tracker: IdentityTracker,
  writer: NodeStateWriter,
  pods: IdentityPod[],
  pinned: { cookie: bigint; ip: string; name: string }[] = [],
  scan = true,
) {
  const entries: PodEntry[] = pods.map((p) => ({
    ...p,
    uid: p.name,
    inMesh: true,
    policy: defaultPolicy("istio"),
    warnings: [],
  }));
  const wanted = new Set(pods.flatMap((p) => [p.ip, p.ip6 ?? ""]).filter(Boolean));
  const d = desiredNodeState({
    pods: entries,
    attached: pinned.map((x, i) => ({
      rec: {
        containerId: `c${i}`,
        ifName: "eth0",
        netns: `/run/netns/${x.name}`,
        podNamespace: "default",
        podName: x.name,
        podIp: x.ip,
        mark: 100 + i,
        netnsCookie: String(x.cookie),
        hook: "xdp",
        txChanged: false,
        createdAt: "",
      },
    })),
    namespaces: tracker.namespaces(wanted, scan),
    fallbackPolicy: defaultPolicy("istio"),
  });
  const w = writer.apply(d);
  tracker.update(d.identityPods, d.netnsPods, w.netnsPods.written, w.netnsPods.removed);
  return w;
}

Deno.test("identity: new pods, deleted pods, vanished namespaces, a restart", () => {
  const node = new FakeNode();
  node.addPod("/run/netns/a", 11, 101n, "10.0.0.1");
  node.addPod("/run/netns/b", 12, 102n, "10.0.0.2");
  const map = new FakePodMaps();
  map.netns.set(999n, { ip4: "10.0.0.50", ip6: "" }); // left by an earlier daemon for a namespace gone since
  const rec = new IdentityTracker(discovery(node));
  const writer = new NodeStateWriter(map);
  const a = { namespace: "default", name: "a", ip: "10.0.0.1" };
  const b = { namespace: "default", name: "b", ip: "10.0.0.2" };
  const netns = () => new Map([...map.netns].map(([c, p]) => [c, p.ip4]));

  pass(rec, writer, [a]);
  assert.deepEqual(netns(), new Map([[101n, "10.0.0.1"]]));
  assert.deepEqual(rec.counts(), { netns: 1, cni: 0, unidentified: 0 });
  assert.deepEqual(rec.of("default", "a")?.map((i) => [i.via, i.cookie, i.netns]), [
    ["netns", 101n, "/run/netns/a"],
  ]);
  assert.equal(rec.of("default", "b"), undefined);

  const r = pass(rec, writer, [a, b], [{ cookie: 300n, ip: "10.0.0.3", name: "c" }]);
  assert.deepEqual([...r.netnsPods.written].sort(), [102n, 300n]);
  assert.deepEqual(rec.counts(), { netns: 2, cni: 0, unidentified: 0 });

  map.writes = [];
  pass(rec, writer, [a], [{ cookie: 300n, ip: "10.0.0.3", name: "c" }]);
  assert.deepEqual(map.writesTo("netns"), ["del netns 102"], "b left: a and the CNI entry are not rewritten");

  node.files.delete("/run/netns/a");
  map.writes = [];
  pass(rec, writer, [a]);
  assert.deepEqual(map.writesTo("netns").sort(), ["del netns 101", "del netns 300"]);
  assert.deepEqual(rec.counts(), { netns: 0, cni: 0, unidentified: 1 });

  // A restarted daemon (a new tracker and writer on the same maps) keeps what is still right.
  node.addPod("/run/netns/a2", 13, 103n, "10.0.0.1");
  pass(rec, writer, [a]);
  map.writes = [];
  pass(new IdentityTracker(discovery(node)), new NodeStateWriter(map), [a]);
  assert.deepEqual(map.writes, []);
  assert.deepEqual(netns(), new Map([[103n, "10.0.0.1"]]));
});

Deno.test("identity: a policy change costs no namespace scan; new addresses or a forced pass do", () => {
  const node = new FakeNode();
  node.addPod("/run/netns/a", 11, 101n, "10.0.0.1");
  let scans = 0;
  const d = discovery(node);
  const scan = d.scan.bind(d);
  d.scan = (w) => (scans++, scan(w));
  const rec = new IdentityTracker(d);
  const writer = new NodeStateWriter(new FakePodMaps());
  const a = { namespace: "default", name: "a", ip: "10.0.0.1" };
  pass(rec, writer, [a], [], false);
  assert.equal(scans, 1, "the first pass scans");
  pass(rec, writer, [a], [], false);
  assert.equal(scans, 1, "the same addresses: the last scan's namespaces");
  pass(rec, writer, [a, { namespace: "default", name: "b", ip: "10.0.0.2" }], [], false);
  assert.equal(scans, 2, "a new address");
  pass(rec, writer, [a, { namespace: "default", name: "b", ip: "10.0.0.2" }], [], true);
  assert.equal(scans, 3, "forced");
});

Deno.test("NetnsDiscovery: an old namespace without a wanted IP is entered again only now and then", () => {
  const node = new FakeNode();
  let now = 0;
  const d = new NetnsDiscovery({
    netnsDirs: ["/run/netns"],
    exclude: new Set(),
    nsfsDev: NSFS,
    fs: node,
    read: node.read,
    now: () => now,
  });
  node.addPod("/run/netns/other", 30, 1n, "10.5.0.1");
  const gone = new Set(["10.5.0.99"]); // a completed pod's IP: in the pod source, in no namespace
  d.scan(gone);
  now = 2000;
  d.scan(gone);
  assert.equal(node.reads.length, 2, "while young, every scan looks again");
  for (now = 20_000; now < 25_000; now += 1000) d.scan(gone);
  assert.equal(node.reads.length, 3, "then once per 10 s");
});
