// Per-pod outbound policy on the real kernel: pod a is identified through its mark listener, its
// annotations become its policy, and for every destination the sidecar must see the connection
// exactly when the reference model (decideOutbound, Istio's order) says "redirect".
import assert from "node:assert/strict";
import { decideInbound, decideOutbound, type Verdict } from "../../src/mesh/decide.ts";
import {
  ISTIO_ANNOTATIONS,
  KUMA_ANNOTATIONS,
  LINKERD_ANNOTATIONS,
  OSM_ANNOTATIONS,
  podPolicy,
} from "../../src/mesh/policy.ts";
import type { MeshMode } from "../../src/mesh/types.ts";
import { createWorld, Scope, startNettool, type World } from "../../testbed/mod.ts";

const I = ISTIO_ANNOTATIONS;

interface Case {
  name: string;
  annotations: Record<string, string>;
  /** Whether decoding the annotations must warn (a bad item) or must not. */
  warns: boolean;
}

interface Outcome {
  /** case name -> "ip:port" -> verdict */
  expected: Record<string, Record<string, Verdict>>;
  actual: Record<string, Record<string, Verdict>>;
}

function ipRe(ip: string): RegExp {
  return new RegExp(`^${ip.replaceAll(".", "\\.")}:\\d+$`);
}

/** Runs every case against every destination from pod a, as the app, in the cgroup. */
async function runMatrix(w: World, cases: Case[], dests: string[]): Promise<Outcome> {
  const a = w.pods.a!;
  const out: Outcome = { expected: {}, actual: {} };
  for (const c of cases) {
    const { policy, warnings } = w.identify("a", c.annotations);
    assert.equal(warnings.length > 0, c.warns, `${c.name}: warnings ${JSON.stringify(warnings)}`);
    out.expected[c.name] = {};
    out.actual[c.name] = {};
    for (const dst of dests) {
      const [ip, port] = dst.split(":") as [string, string];
      const want = decideOutbound(policy, a.ip, ip, Number(port));
      // An AF_INET6 socket to ::ffff:ip (the JDK's default) must decide exactly as its AF_INET twin.
      for (const family of ["inet", "inet6"] as const) {
        const key = family === "inet" ? dst : `[::ffff:${ip}]:${port}`;
        const from = w.sidecars.a!.lines.length;
        const before = w.dp.maps.counters();
        const res = await w.client("a", key, { args: ["--family", family] });
        const after = w.dp.maps.counters();
        assert.equal(res.ok, true, `${c.name} -> ${key}: ${JSON.stringify(res)}`);
        const seen = w.accepted("a", from).filter((l) => l.orig === dst);
        const got: Verdict = seen.length > 0 ? "redirect" : "pass";
        if (family === "inet") {
          out.expected[c.name]![dst] = want;
          out.actual[c.name]![dst] = got;
        } else {
          assert.equal(got, out.actual[c.name]![dst], `${c.name}: ${key} decides as ${dst}`);
        }
        // The counters tell the same story as the sidecar, and every decision was the pod's policy.
        assert.equal(
          after.connect_pod_known - before.connect_pod_known,
          1n,
          `${c.name} -> ${key}: identified`,
        );
        assert.equal(after.connect_redirect - before.connect_redirect, got === "redirect" ? 1n : 0n);
        assert.equal(after.connect_policy_pass - before.connect_policy_pass, got === "pass" ? 1n : 0n);
        if (got === "redirect") {
          assert.equal(seen.length, 1, `${c.name} -> ${key}: once`);
          assert.match(String(seen[0]!.peer), ipRe(a.ip), `${c.name} -> ${key}: the sidecar sees the pod IP`);
        }
      }
    }
  }
  return out;
}

async function meshWorld(scope: Scope, mode: MeshMode) {
  return await createWorld(scope, {
    mode,
    meshed: ["a"],
    outside: { r: [8080, 9090, 7070], s: [8080, 9090] },
  });
}

Deno.test("kernel: Istio outbound annotations decide exactly as the reference model", async () => {
  await using scope = new Scope();
  const w = await meshWorld(scope, "istio");
  const r = w.pods.r!.ip, s = w.pods.s!.ip, net = `${w.node.subnet}.0/24`;
  const dests = [`${r}:8080`, `${r}:9090`, `${r}:7070`, `${s}:8080`, `${s}:9090`];
  const cases: Case[] = [
    { name: "no annotations", annotations: {}, warns: false },
    { name: "exclude port 9090", annotations: { [I.excludeOutboundPorts]: "9090" }, warns: false },
    {
      name: "exclude ports listed with spaces",
      annotations: { [I.excludeOutboundPorts]: "8080, 9090" },
      warns: false,
    },
    { name: "exclude every port", annotations: { [I.excludeOutboundPorts]: "*" }, warns: false },
    { name: "include only r", annotations: { [I.includeOutboundIPRanges]: `${r}/32` }, warns: false },
    {
      name: "include the subnet but exclude s",
      annotations: { [I.includeOutboundIPRanges]: ` ${net} `, [I.excludeOutboundIPRanges]: `${s}/32` },
      warns: false,
    },
    { name: "exclude every range", annotations: { [I.excludeOutboundIPRanges]: "*" }, warns: false },
    {
      name: "no ranges, port 9090 included",
      annotations: { [I.includeOutboundIPRanges]: "", [I.includeOutboundPorts]: "9090" },
      warns: false,
    },
    {
      name: "an included port does not beat an excluded range",
      annotations: {
        [I.includeOutboundIPRanges]: "",
        [I.includeOutboundPorts]: "8080",
        [I.excludeOutboundIPRanges]: r,
      },
      warns: false,
    },
    {
      name: "an excluded port beats an included range",
      annotations: { [I.includeOutboundIPRanges]: `${s}/32`, [I.excludeOutboundPorts]: "8080" },
      warns: false,
    },
    {
      name: "every port included, no ranges",
      annotations: { [I.includeOutboundIPRanges]: "", [I.includeOutboundPorts]: "*" },
      warns: false,
    },
    {
      name: "bad items are skipped, the rest applies",
      annotations: {
        [I.excludeOutboundPorts]: "8080, http, 70000",
        [I.excludeOutboundIPRanges]: `10.0.0.0/33, ${s}, fe80::/64`,
      },
      warns: true,
    },
    {
      name: "range written with host bits",
      annotations: { [I.includeOutboundIPRanges]: `${r}/24` },
      warns: true,
    },
    { name: "interception off", annotations: { [I.interceptionMode]: "NONE" }, warns: false },
  ];
  const { expected, actual } = await runMatrix(w, cases, dests);
  assert.deepEqual(actual, expected);

  // The model is the contract, but a few rows are pinned by hand so that a model and a datapath that
  // drifted together cannot pass.
  const row = (name: string) => Object.values(actual[name]!);
  assert.ok(row("no annotations").every((v) => v === "redirect"));
  assert.ok(row("exclude every port").every((v) => v === "pass"));
  assert.ok(row("interception off").every((v) => v === "pass"));
  assert.deepEqual(actual["exclude ports listed with spaces"]![`${r}:7070`], "redirect");
  assert.deepEqual(
    actual["exclude ports listed with spaces"]![`${s}:9090`],
    "pass",
    "the item after the space",
  );
  assert.deepEqual(actual["bad items are skipped, the rest applies"], {
    [`${r}:8080`]: "pass",
    [`${r}:9090`]: "redirect",
    [`${r}:7070`]: "redirect",
    [`${s}:8080`]: "pass",
    [`${s}:9090`]: "pass",
  });
  assert.deepEqual(actual["an included port does not beat an excluded range"]![`${r}:8080`], "pass");
  assert.deepEqual(actual["an included port does not beat an excluded range"]![`${s}:8080`], "redirect");
  assert.deepEqual(actual["range written with host bits"]![`${s}:9090`], "redirect", "applied as the /24");
});

Deno.test("kernel: an identified pod is the source the sidecar sees, and its own IP is never redirected", async (t) => {
  await using scope = new Scope();
  const w = await createWorld(scope, { meshed: ["a"], outside: { r: [8080] } });
  const a = w.pods.a!, r = w.pods.r!;
  const self = startNettool(scope, { netns: a.ns, uid: 2000 }, [
    "server",
    "--name",
    "a-self",
    "--port",
    "8088",
  ]);
  await self.waitFor((l) => l.event === "listening");
  const own = `${a.ip}:8088`;

  await t.step("unidentified: no policy is known, so even the own IP goes to the sidecar", async () => {
    assert.equal(decideOutbound(null, null, a.ip, 8088), "redirect");
    const from = w.sidecars.a!.lines.length;
    const res = await w.client("a", own);
    assert.equal(res.ok, true, JSON.stringify(res));
    const acc = w.accepted("a", from);
    assert.equal(acc.length, 1, JSON.stringify(acc));
    // Without the pod IP nothing is bound: the pair is plain loopback.
    assert.match(String(acc[0]!.peer), /^127\.0\.0\.1:/);
  });

  await t.step("identified: the sidecar sees the pod IP as the source", async () => {
    w.identify("a");
    const from = w.sidecars.a!.lines.length;
    const before = w.dp.maps.counters();
    const res = await w.client("a", `${r.ip}:8080`);
    assert.equal(res.ok, true, JSON.stringify(res));
    const acc = w.accepted("a", from);
    assert.equal(acc.length, 1);
    assert.match(String(acc[0]!.peer), ipRe(a.ip));
    assert.equal(acc[0]!.orig, `${r.ip}:8080`);
    assert.match(String(res.local), ipRe(a.ip), "the app's own socket is bound to the pod IP too");
    const after = w.dp.maps.counters();
    assert.equal(after.bind_error - before.bind_error, 0n);
    assert.equal(after.connect_pod_known - before.connect_pod_known, 1n);
  });

  await t.step("identified: the own IP passes, even when every port is included", async () => {
    const sets: Record<string, string>[] = [{}, { [I.includeOutboundPorts]: "*" }];
    for (const annotations of sets) {
      const { policy } = w.identify("a", annotations);
      assert.equal(decideOutbound(policy, a.ip, a.ip, 8088), "pass");
      const from = w.sidecars.a!.lines.length;
      const res = await w.client("a", own);
      assert.equal(res.ok, true, JSON.stringify(res));
      assert.equal((res.hello as Record<string, string>).server, "a-self");
      assert.equal(w.accepted("a", from).length, 0, `with ${JSON.stringify(annotations)}`);
    }
  });
});

Deno.test("kernel: Linkerd, Kuma and OSM exclusion annotations decide as the reference model", async (t) => {
  const modes: { mode: MeshMode; cases: (r: string, s: string) => Case[]; passes: number }[] = [
    {
      mode: "linkerd",
      cases: () => [{
        name: "skip-outbound-ports range",
        annotations: { [LINKERD_ANNOTATIONS.skipOutboundPorts]: "9080-9099" },
        warns: false,
      }],
      passes: 2, // r:9090, s:9090
    },
    {
      mode: "kuma",
      cases: () => [{
        name: "exclude-outbound-ports",
        annotations: { [KUMA_ANNOTATIONS.excludeOutboundPorts]: "8080, 7070" },
        warns: false,
      }],
      passes: 3, // r:8080, r:7070, s:8080
    },
    {
      mode: "osm",
      cases: (_r, s) => [{
        name: "port and range exclusion lists",
        annotations: {
          [OSM_ANNOTATIONS.outboundPortExclusionList]: "7070",
          [OSM_ANNOTATIONS.outboundIpRangeExclusionList]: `${s}/32`,
        },
        warns: false,
      }],
      passes: 3, // r:7070, s:8080, s:9090
    },
  ];
  for (const m of modes) {
    await t.step(m.mode, async () => {
      await using scope = new Scope();
      const w = await meshWorld(scope, m.mode);
      const r = w.pods.r!.ip, s = w.pods.s!.ip;
      const dests = [`${r}:8080`, `${r}:9090`, `${r}:7070`, `${s}:8080`, `${s}:9090`];
      const { expected, actual } = await runMatrix(w, m.cases(r, s), dests);
      assert.deepEqual(actual, expected);
      const verdicts = Object.values(actual).flatMap((row) => Object.values(row));
      assert.equal(verdicts.filter((v) => v === "pass").length, m.passes, JSON.stringify(actual));
    });
  }
});

Deno.test("kernel: a wide port range is matched whole, up to its edges and not past them", async (t) => {
  // Servers on both edges of 8000-9000, one port inside, and the first port either side of it.
  const ports = [7999, 8000, 8500, 9000, 9001];
  const inside = (p: number) => p >= 8000 && p <= 9000;
  const modes: { mode: MeshMode; annotations: Record<string, string>; inRange: Verdict }[] = [
    {
      // Linkerd writes the range itself: one entry of the BPF list, excluded from capture.
      mode: "linkerd",
      annotations: { [LINKERD_ANNOTATIONS.skipOutboundPorts]: "8000-9000" },
      inRange: "pass",
    },
    {
      // Istio lists single ports; 1001 consecutive ones are stored as that same single range, and on
      // the include side: with no address range included, only these ports are captured.
      mode: "istio",
      annotations: {
        [I.includeOutboundIPRanges]: "",
        [I.includeOutboundPorts]: Array.from({ length: 1001 }, (_, i) => 8000 + i).join(","),
      },
      inRange: "redirect",
    },
  ];
  for (const m of modes) {
    await t.step(m.mode, async () => {
      await using scope = new Scope();
      const w = await createWorld(scope, { mode: m.mode, meshed: ["a"], outside: { r: ports } });
      const { policy } = w.identify("a", m.annotations);
      const list = m.mode === "linkerd" ? policy.excludeOutboundPorts : policy.includeOutboundPorts;
      assert.deepEqual(list.ranges, [{ from: 8000, to: 9000 }], "stored as one range");

      const r = w.pods.r!.ip;
      const dests = ports.map((p) => `${r}:${p}`);
      const { expected, actual } = await runMatrix(w, [{
        name: "range",
        annotations: m.annotations,
        warns: false,
      }], dests);
      assert.deepEqual(actual, expected);
      // Pinned by hand as well: the model and the datapath must not drift together.
      const outRange: Verdict = m.inRange === "pass" ? "redirect" : "pass";
      assert.deepEqual(
        actual.range,
        Object.fromEntries(ports.map((p) => [`${r}:${p}`, inside(p) ? m.inRange : outRange])),
      );
    });
  }
});

Deno.test("kernel: a skipped inbound port range keeps a same-node proxy off the inbound port", async () => {
  // The sidecar of a connecting to b is rewritten to b's inbound port unless b's policy excludes the
  // port: the same port_in() as outbound, on the inbound list.
  await using scope = new Scope();
  const w = await createWorld(scope, { mode: "linkerd" });
  const b = w.pods.b!;
  const ports = [7999, 8000, 8500, 9000, 9001];
  for (const port of ports) {
    const srv = startNettool(scope, { netns: b.ns, cgroup: w.cgroup, uid: 2000 }, [
      "server",
      "--name",
      "b",
      "--port",
      String(port),
    ]);
    await srv.waitFor((l) => l.event === "listening");
  }
  const { policy, warnings } = podPolicy({ [LINKERD_ANNOTATIONS.skipInboundPorts]: "8000-9000" }, "linkerd");
  assert.deepEqual(warnings, []);
  assert.deepEqual(policy.excludeInboundPorts.ranges, [{ from: 8000, to: 9000 }]);
  w.dp.maps.putPod(b.ip, policy);

  const actual: Record<number, Verdict> = {};
  const expected: Record<number, Verdict> = {};
  for (const port of ports) {
    const from = w.sidecars.b!.lines.length;
    const res = await w.client("a", `${b.ip}:${port}`);
    assert.deepEqual(w.loops("b", from), [], `${port}: b's inbound hop came back to its sidecar`);
    assert.equal(res.ok, true, `${port}: ${JSON.stringify(res)}`);
    const seen = w.accepted("b", from).filter((l) => l.kind === "inbound");
    actual[port] = seen.length > 0 ? "redirect" : "pass";
    expected[port] = decideInbound(policy, w.mesh, port);
  }
  assert.deepEqual(actual, expected);
  assert.deepEqual(actual, { 7999: "redirect", 8000: "pass", 8500: "pass", 9000: "pass", 9001: "redirect" });
});
