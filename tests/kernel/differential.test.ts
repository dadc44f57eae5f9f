// Differential test: the datapath against Istio's own iptables rules. For each annotation set two twin
// pods are created through the real bridge + host-local chain: the "iptables" twin gets Istio's nat
// rules (testbed/istio_iptables.ts) loaded into its own namespace and runs outside the test cgroup; the
// "eBPF" twin is meshed under the real daemon. Both run the same test sidecar and the same app, and the
// same probes run in both. Per probe we compare what can be observed: which sidecar listener took the
// connection, the original destination it read, which server answered and the peer that server saw.
// Addresses are compared by role (self, R1, client, 127.0.0.6, ...) since the twins' IPs differ.
import assert from "node:assert/strict";
import { PinnedDatapathMaps } from "../../src/datapath/datapath.ts";
import {
  cniNode,
  inNs,
  installIstioIptables,
  listening,
  PodRuntime,
  podYaml,
  type Proc,
  PROXY_GID,
  PROXY_UID,
  Scope,
  sidecarReady,
  sleep,
  startDaemon,
  startNettool,
  startSidecar,
  waitMaps,
} from "../../testbed/mod.ts";

const APP_UID = 1000;
const SERVER_UID = 2000;
const T = "traffic.sidecar.istio.io/";
const STATUS = "status.sidecar.istio.io/port";
/** The app's ports in every twin: an app port, an excluded or listed one, one outside a list, Istio's own. */
const APP_PORTS = [8080, 9091, 9092, 15008, 15020, 15021, 15090, 15030];
/** The remote pods' ports: a plain one, one some sets exclude, one some sets include. */
const REMOTE_PORTS = [8080, 9090, 7070];

interface AnnotationSet {
  name: string;
  annotations(ip: { r1: string; r2: string }): Record<string, string>;
}

// R1 stands for addresses a set includes, R2 for addresses it excludes.
const ALL_SETS: AnnotationSet[] = [
  { name: "default", annotations: () => ({}) },
  { name: "excludeOutboundPorts=9090", annotations: () => ({ [`${T}excludeOutboundPorts`]: "9090" }) },
  {
    name: "excludeOutboundIPRanges=R2",
    annotations: (ip) => ({ [`${T}excludeOutboundIPRanges`]: `${ip.r2}/32` }),
  },
  {
    name: "includeOutboundIPRanges=R1",
    annotations: (ip) => ({ [`${T}includeOutboundIPRanges`]: `${ip.r1}/32` }),
  },
  {
    name: "includeOutboundIPRanges='',includeOutboundPorts=7070",
    annotations: () => ({ [`${T}includeOutboundIPRanges`]: "", [`${T}includeOutboundPorts`]: "7070" }),
  },
  {
    name: "include R1 + port 9090, exclude R2 + port 7070",
    annotations: (ip) => ({
      [`${T}includeOutboundIPRanges`]: `${ip.r1}/32`,
      [`${T}excludeOutboundIPRanges`]: `${ip.r2}/32`,
      [`${T}includeOutboundPorts`]: "9090",
      [`${T}excludeOutboundPorts`]: "7070",
    }),
  },
  { name: "excludeOutboundPorts=8080", annotations: () => ({ [`${T}excludeOutboundPorts`]: "8080" }) },
  {
    name: "includeInboundPorts=8080,9091 excludeInboundPorts=9091 status=15030",
    annotations: () => ({
      [`${T}includeInboundPorts`]: "8080,9091",
      [`${T}excludeInboundPorts`]: "9091",
      [STATUS]: "15030",
    }),
  },
  {
    name: "excludeInboundPorts=9091 status=15030",
    annotations: () => ({ [`${T}excludeInboundPorts`]: "9091", [STATUS]: "15030" }),
  },
  // A loopback range makes Istio drop its "app on lo goes direct" rules.
  {
    name: "includeOutboundIPRanges=127.0.0.0/8,R1",
    annotations: (ip) => ({ [`${T}includeOutboundIPRanges`]: `127.0.0.0/8,${ip.r1}/32` }),
  },
];

type Identity = "app" | "proxy" | "gid";
const IDS: Record<Identity, { uid: number; gid: number }> = {
  app: { uid: APP_UID, gid: APP_UID },
  proxy: { uid: PROXY_UID, gid: PROXY_GID },
  // Only the group is the proxy's: Istio's gid-owner rules must catch it.
  gid: { uid: APP_UID, gid: PROXY_GID },
};

interface ProbeDef {
  id: string;
  who: Identity;
  /** Role of the destination: "self" is the probing pod's own IP, "lo" 127.0.0.1. */
  to: "R1" | "R2" | "self" | "lo" | "lo5";
  port: number;
  family?: 4 | 6;
  bind?: string;
}

const ALL_OUTBOUND: ProbeDef[] = [
  { id: "app->R1:8080", who: "app", to: "R1", port: 8080 },
  { id: "app->R1:9090", who: "app", to: "R1", port: 9090 },
  { id: "app->R1:7070", who: "app", to: "R1", port: 7070 },
  { id: "app->R2:8080", who: "app", to: "R2", port: 8080 },
  { id: "app->R2:9090", who: "app", to: "R2", port: 9090 },
  { id: "app->127.0.0.1:8080", who: "app", to: "lo", port: 8080 },
  { id: "app->127.0.0.5:8080", who: "app", to: "lo5", port: 8080 },
  { id: "app->self:8080", who: "app", to: "self", port: 8080 },
  { id: "app[127.0.0.6]->self:8080", who: "app", to: "self", port: 8080, bind: "127.0.0.6" },
  { id: "app[AF_INET6]->::ffff:R1:8080", who: "app", to: "R1", port: 8080, family: 6 },
  { id: "app[AF_INET6]->::ffff:self:8080", who: "app", to: "self", port: 8080, family: 6 },
  { id: "proxy->R1:8080", who: "proxy", to: "R1", port: 8080 },
  { id: "proxy->127.0.0.1:8080", who: "proxy", to: "lo", port: 8080 },
  { id: "proxy->self:8080", who: "proxy", to: "self", port: 8080 },
  { id: "proxy->self:15008", who: "proxy", to: "self", port: 15008 },
  { id: "proxy[127.0.0.6]->self:8080", who: "proxy", to: "self", port: 8080, bind: "127.0.0.6" },
  { id: "gid1337->self:8080", who: "gid", to: "self", port: 8080 },
  { id: "gid1337->R1:8080", who: "gid", to: "R1", port: 8080 },
];

/** Inbound clients: a plain pod of the node, a meshed pod's proxy on the node, a host one hop away. */
type Client = "plain" | "proxy" | "node";

const inboundId = (c: Client, port: number, family: 4 | 6) =>
  `inbound${family === 6 ? "6" : ""} ${c}->self:${port}`;

type World = "iptables" | "ebpf";

interface PodH {
  name: string;
  ns: string;
  ip: string;
  /** The pod's IPv6, in the dual-stack run. */
  ip6?: string;
  world: World;
  sidecar?: Proc;
}

interface Result {
  id: string;
  /** The destination as IPv4 "ip:port", which is what a sidecar reads as the original destination. */
  target: string;
  ok: boolean;
  local?: string;
  hello?: { server: string; peer: string; local: string } | null;
  error?: string;
}

async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<unknown>) {
  const q = [...items];
  await Promise.all(Array.from({ length: n }, async () => {
    for (let t = q.shift(); t !== undefined; t = q.shift()) await fn(t);
  }));
}

/**
 * `dual`: every pod is dual-stack (IPv6 added by hand on top of the bridge plugin's IPv4, as a second
 * pod IP), the iptables twins get Istio's ip6tables rules too, sidecars and apps listen on [::], and
 * the inbound probes run in both families; the sets are those that decide inbound (the outbound
 * dual-stack differential is differential_ipv6.test.ts).
 */
async function differential(cniMode: boolean, dual = false) {
  await using scope = new Scope();
  const SETS = dual ? ALL_SETS.filter((s) => s.name === "default" || s.name.includes("Inbound")) : ALL_SETS;
  const OUTBOUND = dual ? [] : ALL_OUTBOUND;
  const FAMILIES = dual ? [4, 6] as const : [4] as const;
  // The node, and another "node" one forwarding hop away.
  const n = await cniNode(scope, {
    network: "difftest",
    name: "diff",
    salt: (cniMode ? 7 : 0) + (dual ? 3 : 0),
    podNet: "10.246",
    uplinkNet: "10.247",
    other: { suffix: "o", nodeIf: "n0", otherIf: "o0" },
  });
  const { home, k } = n;
  const far = n.client, farIp = n.clientIp;
  const v6 = (net: number, host: number) => `fd0${net}:${k}::${host.toString(16)}`;
  const farIp6 = v6(2, 2);
  if (dual) {
    await inNs(n.node, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
    await inNs(n.node, "ip", ["-6", "addr", "add", `${v6(2, 1)}/64`, "dev", "n0", "nodad"]);
    await inNs(far, "ip", ["-6", "addr", "add", `${farIp6}/64`, "dev", "o0", "nodad"]);
    await inNs(far, "ip", ["-6", "route", "add", `fd01:${k}::/64`, "via", v6(2, 1)]);
  }

  // Two conflists on one network: the node's own (the daemon chains itself into it in CNI mode), and
  // a copy it never touches for pods outside the mesh (the iptables twins among them).
  const meshConflist = n.conflist;
  const plainConflist = `${home.dir}/plain.conflist`;
  await Deno.copyFile(meshConflist, plainConflist);

  const rt = new PodRuntime(scope, n.chain, n.prefix);
  const addPod = async (name: string, world: World, conflist: string): Promise<PodH> => {
    const { ns, ip } = await rt.addPod(name, conflist);
    if (!dual) return { name, ns, ip, world };
    // The bridge plugin made cni0 at the first ADD; its IPv6 gateway address comes with the first pod.
    await inNs(n.node, "ip", ["-6", "addr", "add", `${v6(1, 1)}/64`, "dev", "cni0", "nodad"], {
      allowFail: true,
    });
    const ip6 = v6(1, 0x100 + Number(ip.split(".")[3]));
    await inNs(ns, "ip", ["-6", "addr", "add", `${ip6}/64`, "dev", "eth0", "nodad"]);
    await inNs(ns, "ip", ["-6", "addr", "add", "::6/128", "dev", "lo", "nodad"]);
    await inNs(ns, "ip", ["-6", "route", "add", "default", "via", v6(1, 1)]);
    return { name, ns, ip, ip6, world };
  };

  const r1 = await addPod("r1", "iptables", plainConflist);
  const r2 = await addPod("r2", "iptables", plainConflist);
  const plain = await addPod("pc", "iptables", plainConflist);
  for (const r of [r1, r2]) {
    const s = startNettool(scope, { netns: r.ns }, [
      "servers",
      "--name",
      r === r1 ? "R1" : "R2",
      "--ports",
      REMOTE_PORTS.join(","),
      ...(dual ? ["--bind", "::"] : []),
    ]);
    await s.waitFor((l) => l.event === "listening", 30_000);
  }
  const sets = SETS.map((s) => ({ ...s, ann: s.annotations({ r1: r1.ip, r2: r2.ip }) }));

  // eBPF twins are b<i>, iptables twins i<i>; bc and ic are the meshed pods whose proxies call in.
  const { cgroup, pinPath, podsFile } = home;
  const podsDoc = (ips: Record<string, string>, ip6s: Record<string, string> = {}) =>
    sets.map((s, i) => podYaml(`b${i}`, { annotations: s.ann, ip: ips[`b${i}`], ip6: ip6s[`b${i}`] })).join(
      "",
    ) +
    podYaml("bc", { ip: ips.bc, ip6: ip6s.bc });
  await Deno.writeTextFile(podsFile, podsDoc({}));
  await startDaemon(scope, { ...home, extra: [`--cni-mode=${cniMode}`, "--netns-dirs=/run/netns"] });
  const chain = JSON.parse(await Deno.readTextFile(meshConflist)).plugins.map((p: { type: string }) =>
    p.type
  );
  assert.deepEqual(chain, cniMode ? ["bridge", "merbridge-cni"] : ["bridge"]);

  const twins: { set: typeof sets[number]; ipt: PodH; bpf: PodH }[] = [];
  const pods: Record<string, PodH> = {};
  const names = [...sets.map((_, i) => [`b${i}`, `i${i}`]).flat(), "bc", "ic"];
  await pool(names, 4, async (n) => {
    const world: World = n.startsWith("b") ? "ebpf" : "iptables";
    pods[n] = await addPod(n, world, world === "ebpf" ? meshConflist : plainConflist);
  });
  sets.forEach((set, i) => twins.push({ set, ipt: pods[`i${i}`]!, bpf: pods[`b${i}`]! }));
  if (!cniMode || dual) {
    // Without CNI mode the daemon learns the pods' IPs from the pod source, as from the API server;
    // a dual-stack pod's IPv6 comes from there in either mode (status.podIPs).
    await Deno.writeTextFile(
      podsFile,
      podsDoc(
        Object.fromEntries(Object.values(pods).map((p) => [p.name, p.ip])),
        Object.fromEntries(Object.values(pods).flatMap((p) => p.ip6 ? [[p.name, p.ip6]] : [])),
      ),
    );
  }
  const meshedPods = [...twins.map((t) => t.bpf), pods.bc!];
  const meshed = meshedPods.map((p) => p.ip);
  // Known by IP and identified by network namespace (the CNI plugin or the daemon's own scan).
  await waitMaps(pinPath, (m) => {
    const identified = new Set(m.maps.netnsPods().values());
    return meshed.every((ip) => m.maps.pods().has(ip) && identified.has(ip)) &&
      meshedPods.every((p) => !p.ip6 || m.maps.pods().has(p.ip6));
  }, 30_000);

  // Istio's rules in each iptables twin's own namespace, never the host's.
  for (const family of FAMILIES) {
    for (const [i, set] of sets.entries()) await installIstioIptables(pods[`i${i}`]!.ns, set.ann, {}, family);
    await installIstioIptables(pods.ic!.ns, {}, {}, family);
  }

  // The same sidecar and app in every meshed pod; the eBPF twins' processes in the daemon's cgroup.
  const at = (p: PodH, id: { uid: number; gid: number }) => ({
    netns: p.ns,
    cgroup: p.world === "ebpf" ? cgroup : undefined,
    ...id,
  });
  const start = (p: PodH, args: string[], id: { uid: number; gid: number }) =>
    startNettool(scope, at(p, id), args);
  const ready: Promise<unknown>[] = [];
  for (const p of [...twins.flatMap((t) => [t.ipt, t.bpf]), pods.bc!, pods.ic!]) {
    p.sidecar = startSidecar(scope, { ...at(p, IDS.proxy), dualStack: dual });
    const app = start(p, [
      "servers",
      "--name",
      "app",
      "--ports",
      APP_PORTS.join(","),
      ...(dual ? ["--bind", "::"] : []),
    ], {
      uid: SERVER_UID,
      gid: SERVER_UID,
    });
    ready.push(
      sidecarReady(p.sidecar, ["outbound", "inbound"], 30_000),
      listening(app, [""], 30_000),
    );
  }
  await Promise.all(ready);

  /** Runs probes one after the other in one process; resolves with one result per probe. */
  const probe = async (
    from: PodH,
    id: { uid: number; gid: number },
    specs: { id: string; target: string; family?: number; bind?: string }[],
  ): Promise<Result[]> => {
    // Generous timeouts: a failed probe ends at once (refused, reset, closed), so they only matter on
    // a machine busy enough to be slow.
    const p = start(from, ["probe", JSON.stringify(specs), "--timeout", "5"], id);
    await p.done;
    const res = (p.lines.filter((l) => typeof l.id === "string") as unknown as Result[]).map((r) => ({
      ...r,
      target: specs.find((x) => x.id === r.id)!.target,
    }));
    assert.equal(res.length, specs.length, `probe in ${from.name}: ${p.stderr.join("\n")}`);
    return res;
  };

  // Outbound: every twin, each identity's probes in one process, the twins concurrently.
  const ipOf = (p: PodH, to: ProbeDef["to"]) =>
    to === "R1"
      ? r1.ip
      : to === "R2"
      ? r2.ip
      : to === "self"
      ? p.ip
      : to === "lo5"
      ? "127.0.0.5"
      : "127.0.0.1";
  const outRuns: { pod: PodH; set: string; results: Result[] }[] = [];
  const outJobs = twins.flatMap((t) =>
    [t.ipt, t.bpf].flatMap((pod) =>
      (Object.keys(IDS) as Identity[]).map((who) => ({ pod, set: t.set.name, who }))
    )
  );
  const t0 = Date.now();
  await pool(outJobs, 12, async (j) => {
    const specs = OUTBOUND.filter((d) => d.who === j.who).map((d) => ({
      id: d.id,
      target: `${ipOf(j.pod, d.to)}:${d.port}`,
      family: d.family,
      bind: d.bind,
    }));
    outRuns.push({ pod: j.pod, set: j.set, results: await probe(j.pod, IDS[j.who], specs) });
  });

  // Inbound: every client kind against every twin.
  const inRuns: { target: PodH; client: Client; set: string; results: Result[] }[] = [];
  const inJobs = twins.flatMap((t) =>
    [t.ipt, t.bpf].flatMap((target) =>
      (["plain", "proxy", "node"] as Client[]).map((client) => ({ target, client, set: t.set.name }))
    )
  );
  // One client process per client kind (and world, for the meshed pods' proxies) probes all its
  // targets in turn: a few processes instead of one per target.
  const clientOf = (j: typeof inJobs[number]): [string, PodH, { uid: number; gid: number }] =>
    j.client === "plain"
      ? ["plain", plain, IDS.app]
      : j.client === "node"
      ? ["node", { name: "far", ns: far, ip: farIp, ip6: farIp6, world: "iptables" }, IDS.app]
      : j.target.world === "ebpf"
      ? ["bc", pods.bc!, IDS.proxy]
      : ["ic", pods.ic!, IDS.proxy];
  const byClient = Map.groupBy(inJobs, (j) => clientOf(j)[0]);
  await Promise.all([...byClient.values()].map(async (jobs) => {
    const [, from, id] = clientOf(jobs[0]!);
    // The sidecar writes an IPv6 original destination as ip:port, unbracketed: so is the target.
    const specs = jobs.flatMap((j, n) =>
      FAMILIES.flatMap((family) =>
        APP_PORTS.map((port) => ({
          id: `${n}#${inboundId(j.client, port, family)}`,
          target: `${family === 6 ? j.target.ip6 : j.target.ip}:${port}`,
          family,
        }))
      )
    );
    const results = await probe(from, id, specs);
    jobs.forEach((j, n) => {
      const mine = results.filter((r) => r.id.startsWith(`${n}#`));
      inRuns.push({ ...j, results: mine.map((r) => ({ ...r, id: r.id.slice(r.id.indexOf("#") + 1) })) });
    });
  }));
  const probeMs = Date.now() - t0;
  await sleep(300); // the sidecars' last log lines, written before the probes ended, reach us

  // Sidecar lines are matched to probes by the client's local address, each line used once. A client
  // port can come back for another destination, so a line whose original destination is the probe's
  // own is matched first; only then may a line with another original destination (a datapath that
  // got it wrong) go to a probe still without one.
  interface Obs {
    r: Result;
    sidecars: [string, Proc | undefined][];
    m: Map<string, string>;
    set: string;
    world: World;
    byDesign: boolean;
    took: Map<string, Record<string, unknown>>;
  }
  const observations: Obs[] = [];
  const used = new Map<Proc, Set<number>>();
  const match = (exact: boolean) => {
    for (const o of observations) {
      for (const [who, sc] of o.sidecars) {
        if (!sc || !o.r.local || o.took.has(who)) continue;
        const u = used.get(sc) ?? new Set<number>();
        used.set(sc, u);
        const i = sc.lines.findIndex((l, i) =>
          !u.has(i) && l.event === "accepted" && l.peer === o.r.local && (!exact || l.orig === o.r.target)
        );
        if (i < 0) continue;
        u.add(i);
        o.took.set(who, sc.lines[i]!);
      }
    }
  };
  const roles = (self: PodH, client?: PodH) => {
    const m = new Map<string, string>([
      [self.ip, "self"],
      [r1.ip, "R1"],
      [r2.ip, "R2"],
      [plain.ip, "plain"],
      [farIp, "node"],
      ["127.0.0.1", "127.0.0.1"],
      ["127.0.0.5", "127.0.0.5"],
      ["127.0.0.6", "127.0.0.6"],
      ["::1", "::1"],
      ["::6", "::6"],
    ]);
    if (dual) {
      for (const [p, r] of [[self, "self6"], [plain, "plain6"]] as const) m.set(p.ip6!, r);
      m.set(farIp6, "node6");
    }
    if (client) {
      m.set(client.ip, "client");
      if (client.ip6) m.set(client.ip6, "client6");
    }
    return m;
  };
  const role = (m: Map<string, string>, addr: string | undefined | null, keepPort: boolean) => {
    if (!addr) return "-";
    const [ip, port] = [addr.slice(0, addr.lastIndexOf(":")), addr.slice(addr.lastIndexOf(":") + 1)];
    const r = m.get(ip) ?? `other(${ip})`;
    return keepPort ? `${r}:${port}` : r;
  };
  const outcome = (o: Obs) => {
    const took = o.sidecars.flatMap(([who]) => {
      const l = o.took.get(who);
      return l ? [`${who}.${l.kind}(orig=${role(o.m, l.orig as string | null, true)})`] : [];
    });
    const h = o.r.hello;
    const answer = h
      ? `${h.server}@${role(o.m, h.local, true)} saw ${role(o.m, h.peer, false)}`
      : "no answer";
    return `${took.length ? took.join("+") : "no listener"}; ${answer}${
      o.r.ok ? "" : ` [failed${o.r.error ? `: ${o.r.error}` : ""}]`
    }`;
  };

  const table = new Map<string, { iptables?: string; ebpf?: string; byDesign: boolean }>();
  const put = (set: string, id: string, w: World, o: string, byDesign = false) => {
    const key = `${set} | ${id}`;
    const row = table.get(key) ?? { byDesign };
    row[w] = o;
    table.set(key, row);
  };
  for (const run of outRuns) {
    const m = roles(run.pod);
    for (const r of run.results) {
      observations.push({
        r,
        m,
        sidecars: [["self", run.pod.sidecar]],
        set: run.set,
        world: run.pod.world,
        byDesign: false,
        took: new Map(),
      });
    }
  }
  for (const run of inRuns) {
    const client = run.client === "proxy" ? (run.target.world === "ebpf" ? pods.bc! : pods.ic!) : undefined;
    const m = roles(run.target, client);
    const sidecars: [string, Proc | undefined][] = [["target", run.target.sidecar]];
    if (client) sidecars.push(["client", client.sidecar]);
    // Without CNI mode nothing intercepts inbound traffic that does not come from a meshed pod's proxy.
    const byDesign = !cniMode && run.client !== "proxy";
    for (const r of run.results) {
      observations.push({ r, m, sidecars, set: run.set, world: run.target.world, byDesign, took: new Map() });
    }
  }
  match(true);
  match(false);
  for (const o of observations) put(o.set, o.r.id, o.world, outcome(o), o.byDesign);

  const setOrder = SETS.map((s) => s.name);
  const probeOrder = [
    ...OUTBOUND.map((d) => d.id),
    ...FAMILIES.flatMap((f) =>
      (["plain", "proxy", "node"] as Client[]).flatMap((c) => APP_PORTS.map((p) => inboundId(c, p, f)))
    ),
  ];
  const rows = [...table.entries()].map(([k, v]) => {
    const [set, id] = k.split(" | ") as [string, string];
    return { set, id, ...v };
  }).sort((a, b) =>
    probeOrder.indexOf(a.id) - probeOrder.indexOf(b.id) || setOrder.indexOf(a.set) - setOrder.indexOf(b.set)
  );
  const differ = rows.filter((r) => r.iptables !== r.ebpf);
  // One entry per probe and pair of outcomes, naming every annotation set where it happened.
  const where = (sets: string[]) => {
    const others = SETS.map((x) => x.name).filter((n) => !sets.includes(n));
    return !others.length
      ? "every set"
      : others.length < sets.length
      ? `every set but: ${others.join("; ")}`
      : sets.join("; ");
  };
  const grouped = (rs: typeof rows) => {
    const g = new Map<string, string[]>();
    for (const r of rs) {
      const key = `  ${r.id}\n    iptables: ${r.iptables}\n    eBPF:     ${r.ebpf}`;
      g.set(key, [...(g.get(key) ?? []), r.set]);
    }
    return [...g.entries()].map(([k, sets]) => `${k}\n    in ${where(sets)}`).join("\n");
  };
  const loops = (w: World) =>
    Object.values(pods).filter((p) => p.world === w).reduce(
      (n, p) => n + (p.sidecar?.lines.filter((l) => l.event === "loop").length ?? 0),
      0,
    );
  const byDesign = differ.filter((r) => r.byDesign);
  const real = differ.filter((r) => !r.byDesign);
  console.log(
    `differential (${cniMode ? "CNI mode" : "default mode"}${dual ? ", dual-stack pods" : ""}): ` +
      `${rows.length} probes, ` +
      `${
        rows.length - differ.length
      } identical, ${real.length} differ, ${byDesign.length} differ by design; ` +
      `probes took ${probeMs} ms; capture loops the sidecars refused: ${loops("iptables")} iptables, ` +
      `${loops("ebpf")} eBPF`,
  );
  if (byDesign.length) {
    console.log(
      `by design without CNI mode (plain and other-node clients are not intercepted):\n${grouped(byDesign)}`,
    );
  }
  // The matrix has to have run, against rules that were in force.
  assert.equal(rows.length, SETS.length * (OUTBOUND.length + FAMILIES.length * 3 * APP_PORTS.length));
  const unanswered = rows.filter((r) => !r.iptables || r.iptables.includes("[failed"));
  assert.deepEqual(unanswered, [], "under Istio's rules every probe reaches a server");
  if (dual) {
    // Both families' rules are in force: the oracle sends inbound IPv6 through the sidecar.
    assert.match(
      rows.find((r) => r.set === "default" && r.id === inboundId("node", 8080, 6))?.iptables ?? "",
      /^target\.inbound\(orig=self6:8080\)/,
      "the iptables twins' ip6tables rules are in force",
    );
  } else {
    assert.match(
      rows.find((r) => r.set === "default" && r.id === "app->R1:8080")?.iptables ?? "",
      /^self\.outbound\(orig=R1:8080\)/,
      "the iptables twins' rules are in force",
    );
  }
  {
    using m = new PinnedDatapathMaps(pinPath);
    assert.ok(meshed.every((ip) => m.maps.pods().has(ip)), "every eBPF twin is still known to the datapath");
  }
  assert.equal(
    real.length,
    0,
    `${real.length} decisions differ from Istio's iptables rules:\n${grouped(real)}`,
  );
}

Deno.test("kernel: differential against Istio's iptables rules, default mode (--cni-mode=false)", async () => {
  await differential(false);
});

Deno.test("kernel: differential against Istio's iptables rules, CNI mode", async () => {
  await differential(true);
});

Deno.test("kernel: inbound differential for dual-stack pods against Istio's iptables and ip6tables rules, CNI mode", async () => {
  await differential(true, true);
});
