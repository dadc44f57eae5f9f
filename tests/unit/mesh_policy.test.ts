import assert from "node:assert/strict";
import {
  addPortRange,
  formatPortRange,
  parseCidrList,
  parsePortList,
  parseSinglePort,
  portListHas,
  splitList,
} from "../../src/mesh/annotations.ts";
import {
  defaultPolicy,
  ISTIO_ANNOTATIONS as I,
  KUMA_ANNOTATIONS as K,
  LINKERD_ANNOTATIONS as L,
  OSM_ANNOTATIONS as O,
  podPolicy,
} from "../../src/mesh/policy.ts";
import { MESH_MODES, type PodPolicy, type PolicyWarning } from "../../src/mesh/types.ts";
import { MAX_CIDRS, MAX_PORT_RANGES } from "../../src/generated/bpf_types.ts";

const A = "test/annotation";
/** A port list written exactly as expected: a number is one port, a pair an inclusive range. */
const ports = (...items: (number | [number, number])[]) => ({
  all: false,
  ranges: items.map((i) => typeof i === "number" ? { from: i, to: i } : { from: i[0], to: i[1] }),
});
/** `n` ports no two of which are adjacent, so each costs one range: start, start+2, ... */
const spaced = (n: number, start: number) => Array.from({ length: n }, (_, i) => start + 2 * i);
const ALL_PORTS = { all: true, ranges: [] };
const NO_PORTS = ports();
const cidrs = (...c: string[]) => ({
  all: false,
  cidrs: c.map((s) => {
    const [addr, prefix] = s.split("/");
    return { addr: addr as string, prefix: Number(prefix) };
  }),
});
const ALL_CIDRS = { all: true, cidrs: [] };
const NO_CIDRS = cidrs();

function only(warnings: PolicyWarning[]): PolicyWarning {
  assert.equal(warnings.length, 1, `expected exactly one warning, got ${JSON.stringify(warnings)}`);
  return warnings[0] as PolicyWarning;
}

Deno.test("splitList", async (t) => {
  const cases: [string, string[]][] = [
    ["80,443", ["80", "443"]],
    ["80, 443", ["80", "443"]],
    [" 80 ,\t443 ", ["80", "443"]],
    ["", []],
    [" ", []],
    [",,80,,", ["80"]],
    ["*", ["*"]],
  ];
  for (const [input, want] of cases) {
    await t.step(JSON.stringify(input), () => assert.deepEqual(splitList(input), want));
  }
});

Deno.test("parsePortList", async (t) => {
  await t.step('"80, 443" keeps both (items are trimmed)', () => {
    const r = parsePortList(A, "80, 443");
    assert.deepEqual(r.value, ports(80, 443));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("empty and blank values are an empty list, not all", () => {
    for (const v of ["", "  ", ",", " , "]) {
      const r = parsePortList(A, v);
      assert.deepEqual(r.value, NO_PORTS, JSON.stringify(v));
      assert.deepEqual(r.warnings, []);
    }
  });

  await t.step('"*" means all', () => {
    for (const v of ["*", " * ", "*,"]) {
      const r = parsePortList(A, v);
      assert.deepEqual(r.value, ALL_PORTS, JSON.stringify(v));
      assert.deepEqual(r.warnings, []);
    }
  });

  await t.step('"*" next to ports: all, and the extra item is reported', () => {
    const r = parsePortList(A, "80,*");
    assert.deepEqual(r.value, ALL_PORTS);
    const w = only(r.warnings);
    assert.equal(w.annotation, A);
    assert.equal(w.item, "80");
    assert.match(w.reason, /redundant/);
  });

  await t.step(
    "invalid items are dropped with a warning naming annotation and item; the rest applies",
    () => {
      const bad = ["0", "65536", "-1", "http", "80.5", "0x50", "+80", "1e3"];
      for (const item of bad) {
        const r = parsePortList(A, `8080,${item},9090`);
        assert.deepEqual(r.value, ports(8080, 9090), item);
        const w = only(r.warnings);
        assert.equal(w.annotation, A);
        assert.equal(w.item, item);
      }
    },
  );

  await t.step("the limits 1 and 65535 are valid", () => {
    const r = parsePortList(A, "1,65535");
    assert.deepEqual(r.value, ports(1, 65535));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("duplicates are dropped silently; the list comes out sorted", () => {
    const r = parsePortList(A, "443,80,443,80");
    assert.deepEqual(r.value, ports(80, 443));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("consecutive single ports merge into one range", () => {
    const r = parsePortList(A, "82, 80, 81, 9090");
    assert.deepEqual(r.value, ports([80, 82], 9090));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("many consecutive single ports cost one entry, not one each", () => {
    const list = Array.from({ length: MAX_PORT_RANGES * 4 }, (_, i) => 8000 + i);
    const r = parsePortList(A, list.join(","));
    assert.deepEqual(r.value, ports([8000, 8000 + MAX_PORT_RANGES * 4 - 1]));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("over capacity: the first MAX_PORT_RANGES are kept, the first dropped item is named", () => {
    const list = spaced(MAX_PORT_RANGES + 3, 1000);
    const r = parsePortList(A, list.join(","));
    assert.deepEqual(r.value, ports(...list.slice(0, MAX_PORT_RANGES)));
    const w = only(r.warnings);
    assert.equal(w.annotation, A);
    assert.equal(w.item, String(list[MAX_PORT_RANGES]));
    assert.match(w.reason, new RegExp(`at most ${MAX_PORT_RANGES}`));
  });

  await t.step("exactly MAX_PORT_RANGES is not over capacity", () => {
    const r = parsePortList(A, spaced(MAX_PORT_RANGES, 2000).join(","));
    assert.equal(r.value.ranges.length, MAX_PORT_RANGES);
    assert.deepEqual(r.warnings, []);
  });

  await t.step("duplicates do not use capacity", () => {
    const list = spaced(MAX_PORT_RANGES, 3000);
    const r = parsePortList(A, [...list, ...list].join(","));
    assert.equal(r.value.ranges.length, MAX_PORT_RANGES);
    assert.deepEqual(r.warnings, []);
  });

  await t.step("ranges are refused unless enabled", () => {
    const r = parsePortList(A, "4000-4002,80");
    assert.deepEqual(r.value, ports(80));
    const w = only(r.warnings);
    assert.equal(w.item, "4000-4002");
    assert.match(w.reason, /ranges are not accepted/);
  });

  await t.step("ranges are kept as ranges when enabled, spaces around '-' allowed", () => {
    const r = parsePortList(A, "4000-4002, 25, 7000 - 7001", { ranges: true });
    assert.deepEqual(r.value, ports(25, [4000, 4002], [7000, 7001]));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("single-port range", () => {
    assert.deepEqual(parsePortList(A, "5-5", { ranges: true }).value, ports(5));
  });

  await t.step("overlapping, adjacent and contained ranges merge", () => {
    const r = parsePortList(A, "100-200, 150-250, 251-260, 120-130, 300, 299, 1000-1010", {
      ranges: true,
    });
    assert.deepEqual(r.value, ports([100, 260], [299, 300], [1000, 1010]));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("the whole port space is one range", () => {
    const r = parsePortList(A, "1-65535, 80", { ranges: true });
    assert.deepEqual(r.value, ports([1, 65535]));
  });

  await t.step("bad ranges are named", () => {
    for (const item of ["10-5", "0-5", "5-65536", "5-", "-5", "a-b", "1-2-3"]) {
      const r = parsePortList(A, `22,${item}`, { ranges: true });
      assert.deepEqual(r.value, ports(22), item);
      assert.equal(only(r.warnings).item, item, item);
    }
  });

  await t.step("a wide range is one entry, so a list with it stays far below capacity", () => {
    const r = parsePortList(A, "80,4000-4100,9000", { ranges: true });
    assert.deepEqual(r.value, ports(80, [4000, 4100], 9000));
    assert.deepEqual(r.warnings, []);
  });

  await t.step("a range past capacity is dropped whole and named, never cut", () => {
    const list = spaced(MAX_PORT_RANGES, 1000);
    const r = parsePortList(A, [...list, "5000-6000", "7000"].join(","), { ranges: true });
    assert.deepEqual(r.value, ports(...list));
    const w = only(r.warnings);
    assert.equal(w.item, "5000-6000");
    assert.match(w.reason, /"5000-6000" and every item after it were dropped/);
  });

  await t.step("at capacity, an item that merges into a kept range still fits", () => {
    const list = spaced(MAX_PORT_RANGES, 1000);
    const r = parsePortList(A, [...list, "1001", "900-1000"].join(","), { ranges: true });
    // 1001 joins 1000 and 1002 into one range; 900-1000 then extends it: one entry fewer than before.
    assert.equal(r.value.ranges.length, MAX_PORT_RANGES - 1);
    assert.deepEqual(r.value.ranges[0], { from: 900, to: 1002 });
    assert.deepEqual(r.warnings, []);
  });

  await t.step("invalid items after the capacity is reached are still reported", () => {
    const list = spaced(MAX_PORT_RANGES + 1, 1000);
    const r = parsePortList(A, [...list, "bogus"].join(","));
    assert.equal(r.warnings.length, 2);
    assert.deepEqual(r.warnings.map((w) => w.item).sort(), [String(list.at(-1)), "bogus"].sort());
  });
});

Deno.test("addPortRange", async (t) => {
  const R = (from: number, to: number) => ({ from, to });
  const cases: [string, [number, number][], [number, number], [number, number][]][] = [
    ["into an empty list", [], [5, 9], [[5, 9]]],
    ["before, not touching", [[10, 20]], [1, 8], [[1, 8], [10, 20]]],
    ["after, not touching", [[10, 20]], [22, 30], [[10, 20], [22, 30]]],
    ["adjacent below", [[10, 20]], [5, 9], [[5, 20]]],
    ["adjacent above", [[10, 20]], [21, 25], [[10, 25]]],
    ["contained", [[10, 20]], [12, 13], [[10, 20]]],
    ["containing", [[10, 20]], [1, 30], [[1, 30]]],
    ["bridging two", [[10, 20], [30, 40], [50, 60]], [21, 29], [[10, 40], [50, 60]]],
    ["swallowing several", [[10, 20], [30, 40], [50, 60], [70, 80]], [15, 55], [[10, 60], [70, 80]]],
    ["between two", [[10, 20], [50, 60]], [30, 40], [[10, 20], [30, 40], [50, 60]]],
    ["the edges of the port space", [[2, 65534]], [1, 1], [[1, 65534]]],
  ];
  for (const [name, list, add, want] of cases) {
    await t.step(name, () => {
      const before = list.map(([a, b]) => R(a, b));
      const copy = structuredClone(before);
      assert.deepEqual(addPortRange(before, R(add[0], add[1])), want.map(([a, b]) => R(a, b)));
      assert.deepEqual(before, copy, "the input is left alone");
    });
  }
});

Deno.test("portListHas and formatPortRange", () => {
  const l = ports(80, [8000, 9000]);
  for (const p of [80, 8000, 8500, 9000]) assert.equal(portListHas(l, p), true, String(p));
  for (const p of [79, 81, 7999, 9001]) assert.equal(portListHas(l, p), false, String(p));
  assert.equal(portListHas(ALL_PORTS, 1), true);
  assert.equal(portListHas(NO_PORTS, 80), false);
  assert.deepEqual(l.ranges.map(formatPortRange), ["80", "8000-9000"]);
});

Deno.test("parseCidrList", async (t) => {
  await t.step("CIDRs and bare addresses (/32), trimmed", () => {
    const r = parseCidrList(A, "10.0.0.0/8, 192.168.1.7 ,0.0.0.0/0");
    assert.deepEqual(r.value, cidrs("10.0.0.0/8", "192.168.1.7/32", "0.0.0.0/0"));
    assert.deepEqual(r.warnings, []);
  });

  await t.step('"*" and empty', () => {
    assert.deepEqual(parseCidrList(A, "*").value, ALL_CIDRS);
    assert.deepEqual(parseCidrList(A, "").value, NO_CIDRS);
    assert.deepEqual(parseCidrList(A, " , ").value, NO_CIDRS);
  });

  await t.step("host bits set: normalised to the network, with a warning", () => {
    const r = parseCidrList(A, "10.1.2.3/8");
    assert.deepEqual(r.value, cidrs("10.0.0.0/8"));
    const w = only(r.warnings);
    assert.equal(w.item, "10.1.2.3/8");
    assert.match(w.reason, /host bits.*10\.0\.0\.0\/8/);
  });

  await t.step("IPv6 items are kept after the IPv4 ones; v4-mapped ranges are refused", () => {
    const r = parseCidrList(A, "fd00::/8, 10.0.0.0/8, ::1, ::ffff:10.0.0.1, 2001:DB8:0:0:1::5/64");
    assert.deepEqual(r.value, cidrs("10.0.0.0/8", "fd00::/8", "::1/128", "2001:db8::/64"));
    assert.deepEqual(r.warnings.map((w) => w.item), ["::ffff:10.0.0.1", "2001:DB8:0:0:1::5/64"]);
    assert.match(r.warnings[0]!.reason, /IPv4-mapped/);
    assert.match(r.warnings[1]!.reason, /host bits.*2001:db8::\/64/);
  });

  await t.step("IPv6 items that are not addresses or have bad prefixes are named", () => {
    for (const bad of ["fd00::/129", "fd00:::1", "fd00::g", "1:2:3:4:5:6:7:8:9", "fd00::/x", "1.2.3.4::"]) {
      const r = parseCidrList(A, `${bad}, fd01::/16`);
      assert.deepEqual(r.value, cidrs("fd01::/16"), bad);
      assert.equal(only(r.warnings).item, bad);
    }
  });

  await t.step("each family has its own capacity", () => {
    const v6 = Array.from({ length: MAX_CIDRS + 1 }, (_, i) => `fd00:${i.toString(16)}::/32`);
    const v4 = Array.from({ length: MAX_CIDRS }, (_, i) => `10.${i}.0.0/16`);
    const r = parseCidrList(A, [...v6, ...v4].join(","));
    assert.equal(r.value.cidrs.length, 2 * MAX_CIDRS);
    assert.deepEqual(r.value.cidrs[0], { addr: "10.0.0.0", prefix: 16 });
    assert.deepEqual(r.value.cidrs.at(-1), { addr: `fd00:${(MAX_CIDRS - 1).toString(16)}::`, prefix: 32 });
    const w = only(r.warnings);
    assert.equal(w.item, v6.at(-1));
    assert.match(w.reason, /IPv6/);
  });

  await t.step("invalid items are named; the rest applies", () => {
    const bad = [
      "10.0.0.0/33",
      "10.0.0.0/",
      "10.0.0.0/-1",
      "10.0.0.0/8/8",
      "10.0.0/8",
      "256.0.0.0/8",
      "010.0.0.0/8",
      "1.2.3.4.5",
      "example.com",
      "10.0.0.0/ 8",
    ];
    for (const item of bad) {
      const r = parseCidrList(A, `172.16.0.0/12,${item}`);
      assert.deepEqual(r.value, cidrs("172.16.0.0/12"), item);
      assert.equal(only(r.warnings).item, item, item);
    }
  });

  await t.step("duplicates, including equal after normalisation, are dropped", () => {
    const r = parseCidrList(A, "10.0.0.0/8,10.0.0.0/8,10.9.9.9/8");
    assert.deepEqual(r.value, cidrs("10.0.0.0/8"));
    assert.equal(only(r.warnings).item, "10.9.9.9/8"); // only the host-bits warning
  });

  await t.step("over capacity: first MAX_CIDRS kept, first dropped named", () => {
    const items = Array.from({ length: MAX_CIDRS + 2 }, (_, i) => `10.${i}.0.0/16`);
    const r = parseCidrList(A, items.join(","));
    assert.equal(r.value.cidrs.length, MAX_CIDRS);
    assert.deepEqual(r.value.cidrs[0], { addr: "10.0.0.0", prefix: 16 });
    assert.deepEqual(r.value.cidrs.at(-1), { addr: `10.${MAX_CIDRS - 1}.0.0`, prefix: 16 });
    const w = only(r.warnings);
    assert.equal(w.item, `10.${MAX_CIDRS}.0.0/16`);
    assert.match(w.reason, new RegExp(`at most ${MAX_CIDRS}`));
  });
});

Deno.test("parseSinglePort", async (t) => {
  await t.step(
    "a port",
    () => assert.deepEqual(parseSinglePort(A, " 15021 ", 15020), { value: 15021, warnings: [] }),
  );
  await t.step(
    '"0" means none',
    () => assert.deepEqual(parseSinglePort(A, "0", 15020), { value: 0, warnings: [] }),
  );
  await t.step("invalid falls back with a warning", () => {
    for (const v of ["", "abc", "70000", "-1", "15020,15021"]) {
      const r = parseSinglePort(A, v, 15020);
      assert.equal(r.value, 15020, v);
      assert.equal(only(r.warnings).annotation, A);
    }
  });
});

Deno.test("podPolicy defaults for every mode", async (t) => {
  const want: Record<string, PodPolicy> = {
    istio: {
      statusPort: 15020,
      includeOutboundPorts: NO_PORTS,
      excludeOutboundPorts: NO_PORTS,
      includeInboundPorts: ALL_PORTS,
      excludeInboundPorts: NO_PORTS,
      includeOutboundCidrs: ALL_CIDRS,
      excludeOutboundCidrs: NO_CIDRS,
    },
    linkerd: {
      statusPort: 0,
      includeOutboundPorts: NO_PORTS,
      excludeOutboundPorts: ports([4567, 4568]),
      includeInboundPorts: ALL_PORTS,
      excludeInboundPorts: ports([4567, 4568]),
      includeOutboundCidrs: ALL_CIDRS,
      excludeOutboundCidrs: NO_CIDRS,
    },
    kuma: {
      statusPort: 9000,
      includeOutboundPorts: NO_PORTS,
      excludeOutboundPorts: NO_PORTS,
      includeInboundPorts: ALL_PORTS,
      excludeInboundPorts: NO_PORTS,
      includeOutboundCidrs: ALL_CIDRS,
      excludeOutboundCidrs: NO_CIDRS,
    },
    osm: {
      statusPort: 0,
      includeOutboundPorts: NO_PORTS,
      excludeOutboundPorts: NO_PORTS,
      includeInboundPorts: ALL_PORTS,
      excludeInboundPorts: NO_PORTS,
      includeOutboundCidrs: ALL_CIDRS,
      excludeOutboundCidrs: NO_CIDRS,
    },
  };
  for (const mode of MESH_MODES) {
    await t.step(mode, () => {
      const r = podPolicy({}, mode);
      assert.deepEqual(r.policy, want[mode]);
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(defaultPolicy(mode), want[mode]);
    });
  }
  await t.step("each call returns fresh objects", () => {
    const a = defaultPolicy("istio");
    a.includeInboundPorts.ranges.push({ from: 1, to: 1 });
    assert.deepEqual(defaultPolicy("istio").includeInboundPorts, ALL_PORTS);
  });
});

Deno.test("podPolicy istio", async (t) => {
  await t.step("every annotation set", () => {
    const r = podPolicy({
      [I.includeOutboundIPRanges]: "10.0.0.0/8, 172.16.0.0/12",
      [I.excludeOutboundIPRanges]: "10.96.0.1/32",
      [I.includeInboundPorts]: "8080, 9090",
      [I.excludeInboundPorts]: "9090",
      [I.includeOutboundPorts]: "3306",
      [I.excludeOutboundPorts]: "5432, 6379",
      [I.statusPort]: "15021",
      "unrelated.example.com/x": "not parsed",
    }, "istio");
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.policy, {
      statusPort: 15021,
      includeOutboundPorts: ports(3306),
      excludeOutboundPorts: ports(5432, 6379),
      includeInboundPorts: ports(8080, 9090),
      excludeInboundPorts: ports(9090),
      includeOutboundCidrs: cidrs("10.0.0.0/8", "172.16.0.0/12"),
      excludeOutboundCidrs: cidrs("10.96.0.1/32"),
    });
  });

  await t.step('"*" in every list', () => {
    const keys = [
      I.includeOutboundIPRanges,
      I.excludeOutboundIPRanges,
      I.includeInboundPorts,
      I.excludeInboundPorts,
      I.includeOutboundPorts,
      I.excludeOutboundPorts,
    ];
    const r = podPolicy(Object.fromEntries(keys.map((k) => [k, "*"])), "istio");
    assert.deepEqual(r.warnings, []);
    const p = r.policy;
    for (
      const list of [
        p.includeOutboundPorts,
        p.excludeOutboundPorts,
        p.includeInboundPorts,
        p.excludeInboundPorts,
      ]
    ) {
      assert.deepEqual(list, ALL_PORTS);
    }
    assert.deepEqual(p.includeOutboundCidrs, ALL_CIDRS);
    assert.deepEqual(p.excludeOutboundCidrs, ALL_CIDRS);
  });

  await t.step("empty strings replace the defaults (capture nothing by address / inbound)", () => {
    const r = podPolicy({ [I.includeOutboundIPRanges]: "", [I.includeInboundPorts]: "" }, "istio");
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.policy.includeOutboundCidrs, NO_CIDRS);
    assert.deepEqual(r.policy.includeInboundPorts, NO_PORTS);
  });

  await t.step("empty exclude lists stay empty", () => {
    const r = podPolicy({ [I.excludeOutboundIPRanges]: "", [I.excludeOutboundPorts]: " " }, "istio");
    assert.deepEqual(r.policy.excludeOutboundCidrs, NO_CIDRS);
    assert.deepEqual(r.policy.excludeOutboundPorts, NO_PORTS);
  });

  await t.step("warnings name the pod annotation and the item; the rest applies", () => {
    const r = podPolicy({
      [I.excludeOutboundPorts]: "5432, 99999",
      [I.excludeOutboundIPRanges]: "fd00::/8,10.96.0.0/12,fd00::/200",
      [I.includeInboundPorts]: "8080,http",
    }, "istio");
    assert.deepEqual(r.policy.excludeOutboundPorts, ports(5432));
    assert.deepEqual(r.policy.excludeOutboundCidrs, cidrs("10.96.0.0/12", "fd00::/8"));
    assert.deepEqual(r.policy.includeInboundPorts, ports(8080));
    const got = r.warnings.map((w) => [w.annotation, w.item]).sort();
    assert.deepEqual(
      got,
      [
        [I.excludeOutboundPorts, "99999"],
        [I.excludeOutboundIPRanges, "fd00::/200"],
        [I.includeInboundPorts, "http"],
      ].sort(),
    );
  });

  await t.step('status port "0" means none; invalid keeps 15020 with a warning', () => {
    assert.equal(podPolicy({ [I.statusPort]: "0" }, "istio").policy.statusPort, 0);
    const r = podPolicy({ [I.statusPort]: "status" }, "istio");
    assert.equal(r.policy.statusPort, 15020);
    assert.equal(only(r.warnings).annotation, I.statusPort);
  });

  await t.step("interceptionMode", () => {
    const redirect = podPolicy({ [I.interceptionMode]: "REDIRECT" }, "istio");
    assert.deepEqual(redirect.warnings, []);
    assert.deepEqual(redirect.policy, defaultPolicy("istio"));

    const tproxy = podPolicy({ [I.interceptionMode]: "TPROXY" }, "istio");
    assert.deepEqual(tproxy.policy, defaultPolicy("istio"));
    assert.equal(only(tproxy.warnings).item, "TPROXY");

    const unknown = podPolicy({ [I.interceptionMode]: "bogus" }, "istio");
    assert.deepEqual(unknown.policy, defaultPolicy("istio"));
    assert.match(only(unknown.warnings).reason, /unknown interception mode/);

    const off = podPolicy({ [I.interceptionMode]: "NONE", [I.statusPort]: "15021" }, "istio");
    assert.deepEqual(off.warnings, []);
    assert.equal(off.policy.statusPort, 15021);
    assert.deepEqual(off.policy.includeInboundPorts, NO_PORTS);
    assert.deepEqual(off.policy.includeOutboundPorts, NO_PORTS);
    assert.deepEqual(off.policy.includeOutboundCidrs, NO_CIDRS);
  });

  await t.step("other meshes' annotations are ignored", () => {
    const r = podPolicy({
      [L.skipOutboundPorts]: "1",
      [K.excludeOutboundPorts]: "2",
      [O.outboundPortExclusionList]: "3",
    }, "istio");
    assert.deepEqual(r.policy, defaultPolicy("istio"));
  });

  await t.step("port lists take single ports only, and consecutive ones merge", () => {
    // Istio's injector parses every item as one port: "8000-9000" is refused there, and reported here.
    const refused = podPolicy({ [I.excludeOutboundPorts]: "8000-9000, 5432" }, "istio");
    assert.deepEqual(refused.policy.excludeOutboundPorts, ports(5432));
    assert.equal(only(refused.warnings).item, "8000-9000");

    // Forty consecutive ports used to overflow a 32-port list; as ranges they are one entry.
    const many = Array.from({ length: 40 }, (_, i) => 9000 + i);
    const r = podPolicy({ [I.excludeOutboundPorts]: [...many, 53].join(",") }, "istio");
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.policy.excludeOutboundPorts, ports(53, [9000, 9039]));
  });
});

Deno.test("podPolicy linkerd", async (t) => {
  await t.step("skip annotations replace the defaults, with ranges", () => {
    const r = podPolicy({
      [L.skipInboundPorts]: "25, 4000-4002",
      [L.skipOutboundPorts]: "3306",
      [L.skipSubnets]: "10.0.0.0/8, 192.168.0.1",
    }, "linkerd");
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.policy.excludeInboundPorts, ports(25, [4000, 4002]));
    assert.deepEqual(r.policy.excludeOutboundPorts, ports(3306));
    assert.deepEqual(r.policy.excludeOutboundCidrs, cidrs("10.0.0.0/8", "192.168.0.1/32"));
    assert.deepEqual(r.policy.includeInboundPorts, ALL_PORTS);
    assert.deepEqual(r.policy.includeOutboundCidrs, ALL_CIDRS);
  });

  await t.step("empty skip-ports keep the chart default", () => {
    const r = podPolicy({ [L.skipInboundPorts]: "", [L.skipOutboundPorts]: "  " }, "linkerd");
    assert.deepEqual(r.policy.excludeInboundPorts, ports([4567, 4568]));
    assert.deepEqual(r.policy.excludeOutboundPorts, ports([4567, 4568]));
  });

  await t.step("a range 8000-9000 survives whole, as one entry", () => {
    const r = podPolicy({ [L.skipOutboundPorts]: "8000-9000" }, "linkerd");
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.policy.excludeOutboundPorts, ports([8000, 9000]));
    assert.equal(r.policy.excludeOutboundPorts.ranges.length, 1);
  });

  await t.step("ranges beyond capacity: the warning names the annotation and the first dropped range", () => {
    const kept = Array.from(
      { length: MAX_PORT_RANGES },
      (_, i) => `${10000 + 100 * i}-${10000 + 100 * i + 50}`,
    );
    const r = podPolicy({ [L.skipOutboundPorts]: [...kept, "20000-30000"].join(", ") }, "linkerd");
    assert.equal(r.policy.excludeOutboundPorts.ranges.length, MAX_PORT_RANGES);
    assert.deepEqual(r.policy.excludeOutboundPorts.ranges.at(-1), { from: 13100, to: 13150 });
    const w = only(r.warnings);
    assert.equal(w.annotation, L.skipOutboundPorts);
    assert.equal(w.item, "20000-30000");
  });

  await t.step('"*" in skip lists', () => {
    const r = podPolicy({ [L.skipInboundPorts]: "*", [L.skipSubnets]: "*" }, "linkerd");
    assert.deepEqual(r.policy.excludeInboundPorts, ALL_PORTS);
    assert.deepEqual(r.policy.excludeOutboundCidrs, ALL_CIDRS);
  });
});

Deno.test("podPolicy kuma", async (t) => {
  await t.step("exclusions", () => {
    const r = podPolicy({
      [K.excludeInboundPorts]: "1234, 5678",
      [K.excludeOutboundPorts]: "5432",
      [K.excludeOutboundIps]: "10.0.0.1, 192.168.0.0/16, fd10::/16, fd10::zz",
    }, "kuma");
    assert.deepEqual(r.policy.excludeInboundPorts, ports(1234, 5678));
    assert.deepEqual(r.policy.excludeOutboundPorts, ports(5432));
    assert.deepEqual(r.policy.excludeOutboundCidrs, cidrs("10.0.0.1/32", "192.168.0.0/16", "fd10::/16"));
    const w = only(r.warnings);
    assert.equal(w.annotation, K.excludeOutboundIps);
    assert.equal(w.item, "fd10::zz");
  });

  await t.step("application probe proxy port is the status port", () => {
    assert.equal(podPolicy({ [K.applicationProbeProxyPort]: "9001" }, "kuma").policy.statusPort, 9001);
    assert.equal(podPolicy({ [K.applicationProbeProxyPort]: "0" }, "kuma").policy.statusPort, 0);
  });

  await t.step("Kuma does not take port ranges", () => {
    const r = podPolicy({ [K.excludeInboundPorts]: "1000-1002" }, "kuma");
    assert.deepEqual(r.policy.excludeInboundPorts, NO_PORTS);
    assert.equal(only(r.warnings).item, "1000-1002");
  });
});

Deno.test("podPolicy osm", async (t) => {
  await t.step("exclusions and inclusions", () => {
    const r = podPolicy({
      [O.inboundPortExclusionList]: "6379",
      [O.outboundPortExclusionList]: "6379, 7070",
      [O.outboundIpRangeExclusionList]: "1.1.1.1/32",
      [O.outboundIpRangeInclusionList]: "10.244.0.0/16, 10.96.0.0/16",
    }, "osm");
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.policy.excludeInboundPorts, ports(6379));
    assert.deepEqual(r.policy.excludeOutboundPorts, ports(6379, 7070));
    assert.deepEqual(r.policy.excludeOutboundCidrs, cidrs("1.1.1.1/32"));
    assert.deepEqual(r.policy.includeOutboundCidrs, cidrs("10.244.0.0/16", "10.96.0.0/16"));
  });

  await t.step("an inclusion list without usable ranges captures everything", () => {
    assert.deepEqual(
      podPolicy({ [O.outboundIpRangeInclusionList]: "" }, "osm").policy.includeOutboundCidrs,
      ALL_CIDRS,
    );
    const r = podPolicy({ [O.outboundIpRangeInclusionList]: "fd00::/300" }, "osm");
    assert.deepEqual(r.policy.includeOutboundCidrs, ALL_CIDRS);
    assert.equal(only(r.warnings).annotation, O.outboundIpRangeInclusionList);
  });
});

Deno.test("podPolicy never throws on hostile annotation values", () => {
  const values = [
    "",
    ",",
    "*,*",
    "-",
    "--",
    "/",
    "1/2/3",
    "\u0000",
    "80\n443",
    "9".repeat(400),
    "a,".repeat(1000),
  ];
  const keys = [
    ...Object.values(I),
    ...Object.values(L),
    ...Object.values(K),
    ...Object.values(O),
  ];
  for (const mode of MESH_MODES) {
    for (const v of values) {
      const r = podPolicy(Object.fromEntries(keys.map((k) => [k, v])), mode);
      assert.ok(Array.isArray(r.warnings));
      assert.ok(r.policy.includeOutboundPorts.ranges.length <= MAX_PORT_RANGES);
      assert.ok(r.policy.excludeOutboundCidrs.cidrs.length <= MAX_CIDRS);
    }
  }
  // "80\n443": the newline is whitespace around items only when it surrounds them; inside one item it is bad.
  const r = podPolicy({ [I.excludeOutboundPorts]: "80\n443" }, "istio");
  assert.deepEqual(r.policy.excludeOutboundPorts, NO_PORTS);
  assert.equal(only(r.warnings).item, "80\n443");
});
