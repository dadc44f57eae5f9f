// Differential test for dual-stack pods: the datapath against the rules istio-iptables writes for a
// dual-stack pod, iptables for IPv4 and ip6tables for IPv6 (testbed/istio_iptables.ts). Per annotation
// set, two twin pods on one node, each dual-stack with the same dual-stack test sidecar and app: the
// "iptables" twin runs outside the test cgroup with Istio's rules of both families loaded in its
// namespace; the "eBPF" twin is in the cgroup, identified with the same annotations. The same outbound
// probes (every caller identity, both families, loopback, the pod's own IPs, two remote pods, the
// passthrough source) run in both twins; what each twin's sidecar and servers saw must agree, with
// addresses compared by role.
import assert from "node:assert/strict";
import {
  addIpv6,
  APP_UID,
  createPod,
  createWorld,
  installIstioIptables,
  nettool,
  type Proc,
  PROXY_GID,
  PROXY_UID,
  Scope,
  startNettool,
  type TestPod,
} from "../../testbed/mod.ts";

const T = "traffic.sidecar.istio.io/";
const APP_PORTS = [8080, 9090, 15008];

interface Roles {
  r1: TestPod;
  r2: TestPod;
}

const SETS: { name: string; ann: (r: Roles) => Record<string, string> }[] = [
  { name: "default", ann: () => ({}) },
  { name: "excludeOutboundPorts=9090", ann: () => ({ [`${T}excludeOutboundPorts`]: "9090" }) },
  {
    name: "excludeOutboundIPRanges=R2 (both families)",
    ann: (r) => ({ [`${T}excludeOutboundIPRanges`]: `${r.r2.ip}/32,${r.r2.ip6}/128` }),
  },
  {
    name: "includeOutboundIPRanges=R1 (both families)",
    ann: (r) => ({ [`${T}includeOutboundIPRanges`]: `${r.r1.ip}/32,${r.r1.ip6}/128` }),
  },
  {
    name: "includeOutboundIPRanges=R1 (IPv6 only)",
    ann: (r) => ({ [`${T}includeOutboundIPRanges`]: `${r.r1.ip6}/128` }),
  },
  {
    name: "includeOutboundIPRanges='',includeOutboundPorts=9090",
    ann: () => ({ [`${T}includeOutboundIPRanges`]: "", [`${T}includeOutboundPorts`]: "9090" }),
  },
];

const CALLERS = {
  app: { uid: APP_UID, gid: APP_UID },
  proxy: { uid: PROXY_UID, gid: PROXY_GID },
  "proxy-group": { uid: APP_UID, gid: PROXY_GID },
} as const;

interface Probe {
  caller: keyof typeof CALLERS;
  family: 4 | 6;
  dst: "self" | "lo" | "R1" | "R2";
  port: number;
  bind?: "passthrough";
}

function probes(): Probe[] {
  const out: Probe[] = [];
  for (const family of [4, 6] as const) {
    for (const caller of Object.keys(CALLERS) as (keyof typeof CALLERS)[]) {
      for (const dst of ["self", "lo", "R1", "R2"] as const) {
        const ports = dst === "R1" || dst === "R2" ? [8080, 9090] : APP_PORTS;
        for (const port of ports) out.push({ caller, family, dst, port });
      }
    }
    out.push({ caller: "app", family, dst: "self", port: 8080, bind: "passthrough" });
    out.push({ caller: "proxy", family, dst: "self", port: 8080, bind: "passthrough" });
  }
  return out;
}

interface Twin {
  pod: TestPod;
  sidecar: Proc;
  cgroup?: string;
}

async function startTwin(scope: Scope, pod: TestPod, cgroup?: string): Promise<Twin> {
  const sidecar = startNettool(scope, { netns: pod.ns, cgroup, uid: PROXY_UID, gid: PROXY_GID }, [
    "proxy",
    "--listen",
    "outbound=15001",
    "--listen",
    "inbound=15006",
    "--dual-stack",
  ]);
  for (const kind of ["outbound", "inbound"]) {
    await sidecar.waitFor((l) => l.event === "listening" && l.kind === kind, 15000, `sidecar ${kind}`);
  }
  for (const port of APP_PORTS) {
    const p = startNettool(scope, { netns: pod.ns, uid: 2000 }, [
      "server",
      "--name",
      `app-${port}`,
      "--bind",
      "::",
      "--port",
      `${port}`,
    ]);
    await p.waitFor((l) => l.event === "listening", 15000, `app ${port}`);
  }
  return { pod, sidecar, cgroup };
}

/** What one probe did in one twin, with every address replaced by its role. */
async function observe(t: Twin, r: Roles, p: Probe): Promise<string> {
  const role = new Map<string, string>([
    [t.pod.ip, "self"],
    [t.pod.ip6!, "self"],
    [r.r1.ip, "R1"],
    [r.r1.ip6!, "R1"],
    [r.r2.ip, "R2"],
    [r.r2.ip6!, "R2"],
    ["127.0.0.1", "lo"],
    ["::1", "lo"],
    ["127.0.0.6", "passthrough"],
    ["::6", "passthrough"],
  ]);
  const named = (hostPort: unknown, withPort = true) => {
    const s = String(hostPort ?? "").replace(/^\[/, "").replace(/\]:/, ":");
    const i = s.lastIndexOf(":");
    const ip = s.slice(0, i).replace(/^::ffff:/, "");
    return `${role.get(ip) ?? `other(${ip})`}${withPort ? `:${s.slice(i + 1)}` : ""}`;
  };
  const six = p.family === 6;
  const ip = p.dst === "self"
    ? (six ? t.pod.ip6! : t.pod.ip)
    : p.dst === "lo"
    ? (six ? "::1" : "127.0.0.5")
    : p.dst === "R1"
    ? (six ? r.r1.ip6! : r.r1.ip)
    : (six ? r.r2.ip6! : r.r2.ip);
  const target = six ? `[${ip}]:${p.port}` : `${ip}:${p.port}`;
  const args = ["client", target, "--timeout", "3", ...(six ? ["--family", "inet6"] : [])];
  if (p.bind) args.push("--bind", six ? "::6" : "127.0.0.6");
  const from = t.sidecar.lines.length;
  const res = await nettool({ netns: t.pod.ns, cgroup: t.cgroup, ...CALLERS[p.caller] }, args);
  await new Promise((res) => setTimeout(res, 50));
  const acc = t.sidecar.lines.slice(from).filter((l) => l.event === "accepted" || l.event === "loop");
  const hello = res.hello as { server: string; peer: string } | null;
  return JSON.stringify({
    ok: res.ok === true,
    sidecar: acc.map((l) => `${l.event}:${l.kind}:${named(l.orig)}`),
    server: hello?.server ?? null,
    peer: hello ? named(hello.peer, false) : null,
  });
}

Deno.test("kernel: differential against Istio's iptables and ip6tables rules for dual-stack pods", async () => {
  await using scope = new Scope();
  const w = await createWorld(scope, { meshed: [], outside: {}, ipv6: true });
  const node = w.node;
  const r1 = await createPod(scope, node, "r1", 100), r2 = await createPod(scope, node, "r2", 101);
  const roles = { r1, r2 };
  for (const [i, r] of [r1, r2].entries()) {
    await addIpv6(r, node);
    for (const port of [8080, 9090]) {
      const s = startNettool(scope, { netns: r.ns }, [
        "server",
        "--name",
        `R${i + 1}`,
        "--bind",
        "::",
        "--port",
        `${port}`,
      ]);
      await s.waitFor((l) => l.event === "listening", 15000, `R${i + 1}:${port}`);
    }
  }
  const all = probes();
  const differences: string[] = [];
  let compared = 0;
  let octet = 10;
  for (const set of SETS) {
    const ann = set.ann(roles);
    const ipt = await createPod(scope, node, `i${octet}`, octet++);
    const bpf = await createPod(scope, node, `e${octet}`, octet++);
    for (const p of [ipt, bpf]) await addIpv6(p, node);
    for (const family of [4, 6] as const) await installIstioIptables(ipt.ns, ann, {}, family);
    const tIpt = await startTwin(scope, ipt);
    const tBpf = await startTwin(scope, bpf, w.cgroup);
    // The eBPF twin, known to the datapath by both of its IPs with the set's annotations.
    (w.pods as Record<string, TestPod>)[bpf.name] = bpf;
    const { warnings } = w.identify(bpf.name, ann);
    assert.deepEqual(warnings, [], set.name);
    for (const p of all) {
      const [a, b] = await Promise.all([observe(tIpt, roles, p), observe(tBpf, roles, p)]);
      compared++;
      if (a !== b) differences.push(`${set.name}: ${JSON.stringify(p)}\n  iptables: ${a}\n  eBPF:     ${b}`);
    }
    // Sanity: the oracle captures something in both families, so agreement is not two no-ops.
    if (set.name === "default") {
      const v6 = await observe(tIpt, roles, { caller: "app", family: 6, dst: "R1", port: 8080 });
      assert.match(v6, /accepted:outbound:R1:8080/, `ip6tables captured: ${v6}`);
    }
  }
  assert.ok(compared >= SETS.length * 60, `probes compared: ${compared}`);
  assert.deepEqual(
    differences,
    [],
    `${differences.length} of ${compared} probes differ:\n${differences.join("\n")}`,
  );
});
