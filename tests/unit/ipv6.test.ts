// IPv6 text, the datapath's 16-byte addresses and the layouts that carry them.
import assert from "node:assert/strict";
import {
  cidr6Contains,
  formatIp16,
  formatIpv6,
  ipFamily,
  maskIpv6,
  parseIp16,
  parseIpv6,
  prefixMask6,
} from "../../src/mesh/ipv6.ts";
import { decode, encode, ip16Key } from "../../src/maps/codec.ts";
import {
  decodePairKey,
  decodePodConfig,
  decodePodIps,
  encodePodConfig,
  encodePodIps,
} from "../../src/maps/layouts.ts";
import { ORIG_DST, PAIR_KEY, POD_CONFIG } from "../../src/generated/bpf_types.ts";
import { layout } from "../../src/maps/codec.ts";
import { podPolicy } from "../../src/mesh/policy.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("IPv6 text", async (t) => {
  await t.step("parses every written form to the same bytes", () => {
    const want = "20010db8000000000000000000000001";
    for (const s of ["2001:db8::1", "2001:DB8:0:0:0:0:0:1", "2001:db8:0::0:1", "2001:0db8::0001"]) {
      assert.equal(hex(parseIpv6(s)!), want, s);
    }
    assert.equal(hex(parseIpv6("::")!), "0".repeat(32));
    assert.equal(hex(parseIpv6("::ffff:10.1.2.3")!), "00000000000000000000ffff0a010203");
    assert.equal(hex(parseIpv6("1:2:3:4:5:6:7:8")!), "00010002000300040005000600070008");
  });

  await t.step("refuses what is not an address", () => {
    for (
      const s of [
        "",
        "1.2.3.4",
        ":::",
        "1::2::3",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7",
        "12345::",
        "g::",
        "::1.2.3",
        "1.2.3.4::",
        "fe80::1%eth0",
        "[::1]",
        "1:2:3:4:5:6:7::8:9",
      ]
    ) {
      assert.equal(parseIpv6(s), null, s);
    }
  });

  await t.step("formats as RFC 5952: lower case, longest zero run compressed, single zero words kept", () => {
    const f = (s: string) => formatIpv6(parseIpv6(s)!);
    assert.equal(f("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
    assert.equal(f("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
    assert.equal(f("2001:0:0:1:0:0:0:1"), "2001:0:0:1::1");
    assert.equal(f("2001:db8:1:1:1:1:0:1"), "2001:db8:1:1:1:1:0:1");
    assert.equal(f("::"), "::");
    assert.equal(f("::1"), "::1");
    assert.equal(f("fd00::"), "fd00::");
  });

  await t.step("either family in 16 bytes; IPv4 reads back dotted", () => {
    assert.equal(hex(parseIp16("10.1.2.3")!), "00000000000000000000ffff0a010203");
    assert.equal(formatIp16(parseIp16("10.1.2.3")!), "10.1.2.3");
    assert.equal(formatIp16(parseIp16("::ffff:10.1.2.3")!), "10.1.2.3");
    assert.equal(formatIp16(parseIp16("fd00::5")!), "fd00::5");
    assert.equal(parseIp16("10.1.2"), null);
    assert.equal(ipFamily("10.0.0.1"), 4);
    assert.equal(ipFamily("fd00::1"), 6);
    assert.equal(ipFamily("x"), null);
  });

  await t.step("prefixes and containment", () => {
    assert.equal(hex(prefixMask6(0)), "0".repeat(32));
    assert.equal(hex(prefixMask6(128)), "f".repeat(32));
    assert.equal(hex(prefixMask6(12)), "fff0" + "0".repeat(28));
    assert.throws(() => prefixMask6(129), RangeError);
    assert.equal(formatIpv6(maskIpv6(parseIpv6("2001:db8:1:2::5")!, 48)), "2001:db8:1::");
    const net = parseIpv6("fd00::")!;
    assert.equal(cidr6Contains(net, 8, parseIpv6("fdff::1")!), true);
    assert.equal(cidr6Contains(net, 8, parseIpv6("fe00::1")!), false);
    assert.equal(cidr6Contains(net, 0, parseIpv6("2001::1")!), true);
  });
});

Deno.test("16-byte layouts", async (t) => {
  await t.step("map keys: IPv4 written ::ffff:a.b.c.d", () => {
    assert.equal(hex(ip16Key("192.168.1.2")), "00000000000000000000ffffc0a80102");
    assert.equal(hex(ip16Key("fd00::2")), "fd000000000000000000000000000002");
    assert.throws(() => ip16Key("nope"));
  });

  await t.step("pair_key round trips both families", () => {
    for (
      const k of [
        { netns: 7n, sip: "10.0.0.1", sport: 40000, dip: "10.0.0.2", dport: 80 },
        { netns: 0n, sip: "fd00::1", sport: 40001, dip: "fd00::2", dport: 8080 },
      ]
    ) {
      const b = encode(PAIR_KEY, { ...k });
      assert.equal(b.byteLength, 48);
      assert.deepEqual(decodePairKey(b), k);
    }
  });

  await t.step("orig_dst holds an IPv6 destination", () => {
    const b = encode(ORIG_DST, { ip: "2001:db8::80", port: 443, flags: 1 });
    assert.equal(b.byteLength, layout(ORIG_DST).size);
    assert.deepEqual(decode(ORIG_DST, b), { ip: "2001:db8::80", port: 443, flags: 1 });
  });

  await t.step("pod_ips: each family in its slot, absent as empty", () => {
    for (
      const ips of [{ ip4: "10.0.0.5", ip6: "fd00::5" }, { ip4: "10.0.0.5", ip6: "" }, {
        ip4: "",
        ip6: "fd00::5",
      }]
    ) {
      assert.deepEqual(decodePodIps(encodePodIps(ips)), ips);
    }
    const b = encodePodIps({ ip4: "10.0.0.5", ip6: "" });
    assert.equal(hex(b.subarray(0, 4)), "0a000005");
    assert.equal(hex(b.subarray(4)), "0".repeat(32));
  });

  await t.step("pod_config keeps IPv4 and IPv6 ranges in their own lists, masked", () => {
    const { policy, warnings } = podPolicy({
      "traffic.sidecar.istio.io/excludeOutboundIPRanges": "fd00:1::/32, 10.96.0.0/12, 2001:db8::/64",
      "traffic.sidecar.istio.io/includeOutboundIPRanges": "fd00::/8",
    }, "istio");
    assert.deepEqual(warnings, []);
    const b = encodePodConfig(policy);
    const l = layout(POD_CONFIG);
    const at = (n: string) => l.fields.find((f) => f.name === n)!.offset;
    assert.equal(b[at("n_exclude_out_cidrs")], 1);
    assert.equal(b[at("n_exclude_out_cidrs6")], 2);
    assert.equal(b[at("n_include_out_cidrs")], 0);
    assert.equal(b[at("n_include_out_cidrs6")], 1);
    const e6 = at("exclude_out_cidrs6");
    assert.equal(hex(b.subarray(e6, e6 + 16)), "fd000001" + "0".repeat(24));
    assert.equal(hex(b.subarray(e6 + 16, e6 + 32)), "ffffffff" + "0".repeat(24));
    assert.deepEqual(decodePodConfig(b), policy);
  });
});
