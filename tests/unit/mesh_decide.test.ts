import assert from "node:assert/strict";
import {
  type CallerPod,
  decideConnect,
  decideInbound,
  decideOutbound,
  explainInbound,
  explainOutbound,
  type Verdict,
} from "../../src/mesh/decide.ts";
import { cidrContains, formatIpv4, parseIpv4, prefixMask } from "../../src/mesh/ipv4.ts";
import { meshParams } from "../../src/mesh/modes.ts";
import { defaultPolicy, ISTIO_ANNOTATIONS as I, podPolicy } from "../../src/mesh/policy.ts";
import type { PodPolicy } from "../../src/mesh/types.ts";

const POD = "10.1.0.5";
const istio = (a: Record<string, string>): PodPolicy => {
  const r = podPolicy(a, "istio");
  assert.deepEqual(r.warnings, [], "test policy must parse cleanly");
  return r.policy;
};

Deno.test("ipv4 helpers", async (t) => {
  await t.step("parse/format round trip", () => {
    for (const s of ["0.0.0.0", "10.1.2.3", "255.255.255.255", "127.0.0.1"]) {
      const v = parseIpv4(s);
      assert.notEqual(v, null);
      assert.equal(formatIpv4(v as number), s);
    }
    assert.equal(parseIpv4("255.255.255.255"), 0xffffffff);
  });
  await t.step("refuses non-addresses", () => {
    for (
      const s of ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", " 1.2.3.4", "a.b.c.d", "::1"]
    ) {
      assert.equal(parseIpv4(s), null, s);
    }
  });
  await t.step("masks", () => {
    assert.equal(prefixMask(0), 0);
    assert.equal(prefixMask(8), 0xff000000);
    assert.equal(prefixMask(32), 0xffffffff);
    assert.throws(() => prefixMask(33), RangeError);
  });
  await t.step("cidrContains edges", () => {
    const ip = (s: string) => parseIpv4(s) as number;
    assert.equal(cidrContains({ addr: "10.0.0.0", prefix: 8 }, ip("10.255.255.255")), true);
    assert.equal(cidrContains({ addr: "10.0.0.0", prefix: 8 }, ip("11.0.0.0")), false);
    assert.equal(cidrContains({ addr: "0.0.0.0", prefix: 0 }, ip("203.0.113.9")), true);
    assert.equal(cidrContains({ addr: "192.168.1.7", prefix: 32 }, ip("192.168.1.7")), true);
    assert.equal(cidrContains({ addr: "192.168.1.7", prefix: 32 }, ip("192.168.1.8")), false);
    assert.equal(cidrContains({ addr: "128.0.0.0", prefix: 1 }, ip("200.0.0.1")), true);
    assert.equal(cidrContains({ addr: "128.0.0.0", prefix: 1 }, ip("100.0.0.1")), false);
  });
});

Deno.test("decideOutbound matrix", async (t) => {
  type Row = [string, PodPolicy | null, string | null, string, number, Verdict];
  const def = defaultPolicy("istio");
  const rows: Row[] = [
    // Loopback and self come before everything, even an unknown pod.
    ["loopback 127.0.0.1", def, POD, "127.0.0.1", 80, "pass"],
    ["loopback 127.0.0.6", def, POD, "127.0.0.6", 80, "pass"],
    ["loopback 127.255.255.254", null, null, "127.255.255.254", 80, "pass"],
    ["own pod IP", def, POD, POD, 8080, "pass"],
    [
      "own pod IP even if the port is included",
      istio({ [I.includeOutboundPorts]: "8080" }),
      POD,
      POD,
      8080,
      "pass",
    ],
    ["unknown pod redirects", null, null, "10.2.0.9", 80, "redirect"],
    ["unknown pod, pod IP known", null, POD, "10.2.0.9", 80, "redirect"],
    ["empty pod IP is ignored", def, "", "10.2.0.9", 80, "redirect"],
    ["default policy redirects everything else", def, POD, "10.2.0.9", 80, "redirect"],
    ["128.0.0.1 is not loopback", def, POD, "128.0.0.1", 80, "redirect"],
    // Exclusions.
    ["excluded port", istio({ [I.excludeOutboundPorts]: "5432" }), POD, "10.2.0.9", 5432, "pass"],
    [
      "other port not excluded",
      istio({ [I.excludeOutboundPorts]: "5432" }),
      POD,
      "10.2.0.9",
      5433,
      "redirect",
    ],
    ["exclude ports *", istio({ [I.excludeOutboundPorts]: "*" }), POD, "10.2.0.9", 1, "pass"],
    [
      "excluded range",
      istio({ [I.excludeOutboundIPRanges]: "10.96.0.0/12" }),
      POD,
      "10.100.0.1",
      443,
      "pass",
    ],
    [
      "outside excluded range",
      istio({ [I.excludeOutboundIPRanges]: "10.96.0.0/12" }),
      POD,
      "10.112.0.1",
      443,
      "redirect",
    ],
    ["exclude ranges *", istio({ [I.excludeOutboundIPRanges]: "*" }), POD, "8.8.8.8", 443, "pass"],
    // Exclusions beat inclusions.
    [
      "excluded port beats included port",
      istio({ [I.excludeOutboundPorts]: "443", [I.includeOutboundPorts]: "443" }),
      POD,
      "10.2.0.9",
      443,
      "pass",
    ],
    [
      "excluded range beats included port",
      istio({ [I.excludeOutboundIPRanges]: "10.2.0.0/16", [I.includeOutboundPorts]: "443" }),
      POD,
      "10.2.0.9",
      443,
      "pass",
    ],
    [
      "excluded range beats included range",
      istio({ [I.excludeOutboundIPRanges]: "10.2.0.9", [I.includeOutboundIPRanges]: "10.0.0.0/8" }),
      POD,
      "10.2.0.9",
      80,
      "pass",
    ],
    [
      "excluded port beats included range",
      istio({ [I.excludeOutboundPorts]: "80", [I.includeOutboundIPRanges]: "10.0.0.0/8" }),
      POD,
      "10.2.0.9",
      80,
      "pass",
    ],
    // Inclusions.
    [
      "included range only",
      istio({ [I.includeOutboundIPRanges]: "10.0.0.0/8" }),
      POD,
      "10.2.0.9",
      80,
      "redirect",
    ],
    [
      "outside included range",
      istio({ [I.includeOutboundIPRanges]: "10.0.0.0/8" }),
      POD,
      "8.8.8.8",
      80,
      "pass",
    ],
    [
      "empty include ranges capture nothing",
      istio({ [I.includeOutboundIPRanges]: "" }),
      POD,
      "10.2.0.9",
      80,
      "pass",
    ],
    [
      "included port with empty ranges",
      istio({ [I.includeOutboundIPRanges]: "", [I.includeOutboundPorts]: "3306" }),
      POD,
      "8.8.8.8",
      3306,
      "redirect",
    ],
    [
      "included port outside included ranges",
      istio({ [I.includeOutboundIPRanges]: "10.0.0.0/8", [I.includeOutboundPorts]: "3306" }),
      POD,
      "8.8.8.8",
      3306,
      "redirect",
    ],
    [
      "include ports *",
      istio({ [I.includeOutboundIPRanges]: "", [I.includeOutboundPorts]: "*" }),
      POD,
      "8.8.8.8",
      1,
      "redirect",
    ],
    ["port 0 is a port like any other", def, POD, "10.2.0.9", 0, "redirect"],
  ];
  for (const [name, policy, podIp, dst, port, want] of rows) {
    await t.step(name, () => {
      assert.equal(decideOutbound(policy, podIp, dst, port), want);
      const d = explainOutbound(policy, podIp, dst, port);
      assert.equal(d.verdict, want);
      assert.ok(d.reason.length > 0);
    });
  }
  await t.step("bad inputs are programming errors", () => {
    assert.throws(() => decideOutbound(def, POD, "fd00::1", 80), TypeError);
    assert.throws(() => decideOutbound(def, "bogus", "10.2.0.9", 80), TypeError);
    assert.throws(() => decideOutbound(def, POD, "10.2.0.9", 65536), RangeError);
    assert.throws(() => decideOutbound(def, POD, "10.2.0.9", 1.5), RangeError);
  });
});

Deno.test("decideInbound matrix", async (t) => {
  type Row = [string, string, PodPolicy, number, Verdict];
  const istioMesh = meshParams("istio");
  const rows: Row[] = [
    ["app port, defaults", "istio", defaultPolicy("istio"), 8080, "redirect"],
    ["inbound port itself", "istio", defaultPolicy("istio"), 15006, "pass"],
    ["HBONE 15008", "istio", defaultPolicy("istio"), 15008, "pass"],
    ["Prometheus 15090", "istio", defaultPolicy("istio"), 15090, "pass"],
    ["health 15021", "istio", defaultPolicy("istio"), 15021, "pass"],
    ["status 15020", "istio", defaultPolicy("istio"), 15020, "pass"],
    ["custom status port", "istio", istio({ [I.statusPort]: "16000" }), 16000, "pass"],
    ["status port 0 excludes nothing extra", "istio", istio({ [I.statusPort]: "0" }), 0, "redirect"],
    [
      // istio-iptables writes only the listed ports' rules: nothing excluded is consulted.
      "an include list captures exactly its ports, the mesh's own ports too",
      "istio",
      istio({ [I.includeInboundPorts]: "15090,8080" }),
      15090,
      "redirect",
    ],
    [
      "the tunnel port is never captured, even listed",
      "istio",
      istio({ [I.includeInboundPorts]: "15008,8080" }),
      15008,
      "pass",
    ],
    ["excluded port", "istio", istio({ [I.excludeInboundPorts]: "9090" }), 9090, "pass"],
    [
      "with an include list, exclusions are not consulted",
      "istio",
      istio({ [I.includeInboundPorts]: "9090", [I.excludeInboundPorts]: "9090" }),
      9090,
      "redirect",
    ],
    ["exclude *", "istio", istio({ [I.excludeInboundPorts]: "*" }), 8080, "pass"],
    ["include list: listed", "istio", istio({ [I.includeInboundPorts]: "8080, 9090" }), 9090, "redirect"],
    ["include list: not listed", "istio", istio({ [I.includeInboundPorts]: "8080, 9090" }), 7070, "pass"],
    ["include empty: nothing", "istio", istio({ [I.includeInboundPorts]: "" }), 8080, "pass"],
    ["interceptionMode NONE", "istio", istio({ [I.interceptionMode]: "NONE" }), 8080, "pass"],
    ["linkerd app port", "linkerd", defaultPolicy("linkerd"), 8080, "redirect"],
    ["linkerd admin 4191", "linkerd", defaultPolicy("linkerd"), 4191, "pass"],
    ["linkerd control 4190", "linkerd", defaultPolicy("linkerd"), 4190, "pass"],
    ["linkerd inbound 4143", "linkerd", defaultPolicy("linkerd"), 4143, "pass"],
    ["linkerd default skip 4567", "linkerd", defaultPolicy("linkerd"), 4567, "pass"],
    ["linkerd 15020 is just a port", "linkerd", defaultPolicy("linkerd"), 15020, "redirect"],
    ["kuma probe proxy 9000", "kuma", defaultPolicy("kuma"), 9000, "pass"],
    ["kuma envoy admin 9901", "kuma", defaultPolicy("kuma"), 9901, "pass"],
    ["kuma app port", "kuma", defaultPolicy("kuma"), 8080, "redirect"],
    ["osm inbound 15003", "osm", defaultPolicy("osm"), 15003, "pass"],
    ["osm probes 15901", "osm", defaultPolicy("osm"), 15901, "pass"],
    ["osm healthcheck 15904", "osm", defaultPolicy("osm"), 15904, "pass"],
    ["osm metrics 15010", "osm", defaultPolicy("osm"), 15010, "pass"],
    ["osm app port", "osm", defaultPolicy("osm"), 15006, "redirect"],
  ];
  for (const [name, mode, policy, port, want] of rows) {
    await t.step(name, () => {
      const mesh = meshParams(mode as never);
      assert.equal(decideInbound(policy, mesh, port), want);
      const d = explainInbound(policy, mesh, port);
      assert.equal(d.verdict, want);
      assert.ok(d.reason.length > 0);
    });
  }
  await t.step("bad port is a programming error", () => {
    assert.throws(() => decideInbound(defaultPolicy("istio"), istioMesh, -1), RangeError);
  });
});

Deno.test("explainConnect follows the order of Istio's OUTPUT rules", async (t) => {
  const mesh = meshParams("istio");
  const policy = istio({ [I.excludeOutboundPorts]: "9090" });
  const pod = { ip: POD, policy };
  const other = istio({});
  const localPod = (ip: string) => ip === "10.1.0.9" ? other : undefined;
  const d = (probe: Parameters<typeof decideConnect>[2], p: CallerPod = pod) =>
    decideConnect(mesh, p, probe, localPod);
  await t.step("a socket bound to 127.0.0.6 is never captured, whoever calls", () => {
    for (const caller of ["app", "proxy", "proxy-group"] as const) {
      assert.equal(d({ caller, source: "127.0.0.6", dstIp: POD, dstPort: 8080 }), "pass", caller);
      assert.equal(d({ caller, source: "127.0.0.6", dstIp: "10.9.9.9", dstPort: 8080 }), "pass", caller);
    }
    assert.equal(
      d({
        caller: "proxy",
        family: "inet6",
        source: "::ffff:127.0.0.6",
        dstIp: `::ffff:${POD}`,
        dstPort: 80,
      }),
      "pass",
    );
  });
  await t.step(
    "the proxy by uid calling its own pod goes inbound, except the tunnel and excluded ports",
    () => {
      assert.equal(d({ caller: "proxy", dstIp: POD, dstPort: 8080 }), "inbound");
      assert.equal(d({ caller: "proxy", dstIp: POD, dstPort: 15021 }), "inbound");
      assert.equal(d({ caller: "proxy", dstIp: POD, dstPort: 15008 }), "pass");
      assert.equal(d({ caller: "proxy", dstIp: POD, dstPort: 9090 }), "pass");
      assert.equal(d({ caller: "proxy", dstIp: "127.0.0.5", dstPort: 8080 }), "inbound");
      assert.equal(d({ caller: "proxy", dstIp: "127.0.0.1", dstPort: 8080 }), "pass");
    },
  );
  await t.step("the proxy by group only, and the app, reach local destinations directly", () => {
    for (const caller of ["app", "proxy-group"] as const) {
      assert.equal(d({ caller, dstIp: POD, dstPort: 8080 }), "pass", caller);
      assert.equal(d({ caller, dstIp: "127.0.0.5", dstPort: 8080 }), "pass", caller);
    }
  });
  await t.step("the proxy to another meshed pod of the node: that pod's inbound rules", () => {
    assert.equal(d({ caller: "proxy", dstIp: "10.1.0.9", dstPort: 8080 }), "inbound");
    assert.equal(d({ caller: "proxy-group", dstIp: "10.1.0.9", dstPort: 15020 }), "pass");
    assert.equal(d({ caller: "proxy", dstIp: "10.9.9.9", dstPort: 8080 }), "pass");
  });
  await t.step("an AF_INET6 socket to ::ffff:a.b.c.d decides like AF_INET; native IPv6 is left alone", () => {
    for (
      const [ip, port] of [["10.9.9.9", 8080], ["10.9.9.9", 9090], [POD, 8080], ["127.0.0.1", 80]] as const
    ) {
      assert.equal(
        d({ caller: "app", family: "inet6", dstIp: `::ffff:${ip}`, dstPort: port }),
        d({ caller: "app", dstIp: ip, dstPort: port }),
        `${ip}:${port}`,
      );
    }
    assert.equal(d({ caller: "app", family: "inet6", dstIp: "fd00::1", dstPort: 8080 }), "pass");
  });
  await t.step("an unidentified pod: the app is redirected, its own IP cannot be told apart", () => {
    const unknown = { ip: null, policy: null };
    assert.equal(d({ caller: "app", dstIp: "10.9.9.9", dstPort: 9090 }, unknown), "redirect");
    assert.equal(d({ caller: "app", dstIp: POD, dstPort: 8080 }, unknown), "redirect");
  });
  await t.step("Linkerd lets the proxy's loopback through", () => {
    const l = meshParams("linkerd");
    assert.equal(
      decideConnect(l, { ip: POD, policy: null }, { caller: "proxy", dstIp: POD, dstPort: 8080 }),
      "pass",
    );
  });
});

Deno.test("explainConnect: an included loopback range lifts the loopback exemptions as istio-iptables does", () => {
  const mesh = meshParams("istio");
  const policy = istio({ [I.includeOutboundIPRanges]: "127.0.0.0/8", [I.includeOutboundPorts]: "8080" });
  const pod = { ip: POD, policy };
  const d = (probe: Parameters<typeof decideConnect>[2]) => decideConnect(mesh, pod, probe);
  assert.equal(d({ caller: "app", dstIp: "127.0.0.5", dstPort: 9000 }), "redirect", "in the included range");
  assert.equal(d({ caller: "app", dstIp: "127.0.0.1", dstPort: 9000 }), "pass", "127.0.0.1 still returns");
  assert.equal(d({ caller: "app", dstIp: POD, dstPort: 8080 }), "redirect", "own IP on an included port");
  assert.equal(d({ caller: "app", dstIp: POD, dstPort: 9000 }), "pass", "own IP otherwise not included");
  assert.equal(
    d({ caller: "proxy-group", dstIp: POD, dstPort: 9000 }),
    "inbound",
    "the group rule reaches inbound",
  );
  assert.equal(d({ caller: "proxy-group", dstIp: POD, dstPort: 15008 }), "pass");
  assert.equal(d({ caller: "proxy", dstIp: POD, dstPort: 9000 }), "inbound");
});
