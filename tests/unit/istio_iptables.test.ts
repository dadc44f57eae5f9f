// The differential tests' oracle must write Istio's rules in Istio's order: the first matching rule
// decides, so an order mistake here would make the oracle, not the datapath, wrong.
import assert from "node:assert/strict";
import {
  istioFlags,
  istioIptablesRestore,
  istioNatRules,
  IstioRejects,
} from "../../testbed/istio_iptables.ts";

const T = "traffic.sidecar.istio.io/";
const out = (rules: string[]) =>
  rules.filter((r) => r.startsWith("-A ISTIO_OUTPUT") || r.startsWith("-A OUTPUT"));
const inbound = (rules: string[]) =>
  rules.filter((r) => r.startsWith("-A ISTIO_INBOUND") || r.startsWith("-A PREROUTING"));

const OWNER = [
  "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
  "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
  "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
  "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
  "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
  "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
  "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
  "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
];

Deno.test("istio oracle: a pod without annotations gets the default sidecar rule set, in order", () => {
  assert.deepEqual(istioNatRules(istioFlags({})), [
    "-N ISTIO_INBOUND",
    "-N ISTIO_REDIRECT",
    "-N ISTIO_IN_REDIRECT",
    "-N ISTIO_OUTPUT",
    "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
    "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
    "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
    "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
    "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
    "-A OUTPUT -j ISTIO_OUTPUT",
    ...OWNER,
    "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
  ]);
});

Deno.test("istio oracle: excluded ports, then owner rules, then excluded ranges, included ports, included ranges", () => {
  const rules = istioNatRules(istioFlags({
    [`${T}excludeOutboundPorts`]: "9090, 9091",
    [`${T}excludeOutboundIPRanges`]: "10.2.0.0/16",
    [`${T}includeOutboundPorts`]: "7070",
    [`${T}includeOutboundIPRanges`]: "10.1.0.0/16,10.3.0.0/24",
  }));
  assert.deepEqual(out(rules), [
    "-A OUTPUT -j ISTIO_OUTPUT",
    "-A ISTIO_OUTPUT -p tcp --dport 9090 -j RETURN",
    "-A ISTIO_OUTPUT -p udp --dport 9090 -j RETURN",
    "-A ISTIO_OUTPUT -p tcp --dport 9091 -j RETURN",
    "-A ISTIO_OUTPUT -p udp --dport 9091 -j RETURN",
    ...OWNER,
    "-A ISTIO_OUTPUT -d 10.2.0.0/16 -j RETURN",
    "-A ISTIO_OUTPUT -p tcp --dport 7070 -j ISTIO_REDIRECT",
    "-A ISTIO_OUTPUT -d 10.1.0.0/16 -j ISTIO_REDIRECT",
    "-A ISTIO_OUTPUT -d 10.3.0.0/24 -j ISTIO_REDIRECT",
    "-A ISTIO_OUTPUT -j RETURN",
  ]);
});

Deno.test("istio oracle: an empty includeOutboundIPRanges redirects nothing by address", () => {
  const rules = out(istioNatRules(istioFlags({ [`${T}includeOutboundIPRanges`]: "" })));
  assert.equal(rules.at(-1), "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN");
  assert.ok(!rules.some((r) => r.includes("ISTIO_REDIRECT")));
});

Deno.test("istio oracle: an inbound port list redirects only its ports and ignores the exclusions", () => {
  const rules = inbound(istioNatRules(istioFlags({
    [`${T}includeInboundPorts`]: "8080,9091",
    [`${T}excludeInboundPorts`]: "9091",
    "status.sidecar.istio.io/port": "15030",
  })));
  assert.deepEqual(rules, [
    "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
    "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
    "-A ISTIO_INBOUND -p tcp --dport 9091 -j ISTIO_IN_REDIRECT",
  ]);
  assert.deepEqual(
    inbound(istioNatRules(istioFlags({ [`${T}includeInboundPorts`]: "" }))),
    ["-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN"],
    "an empty list installs no PREROUTING jump",
  );
});

Deno.test("istio oracle: inbound exclusions with '*': Envoy's ports, the pod's list, the status port", () => {
  const f = istioFlags({
    [`${T}excludeInboundPorts`]: "9091,15021",
    "status.sidecar.istio.io/port": "15030",
  });
  assert.deepEqual(f.excludeInboundPorts, [15090, 15021, 9091, 15030]);
  assert.deepEqual(istioFlags({ "status.sidecar.istio.io/port": "0" }).excludeInboundPorts, [15090, 15021]);
});

Deno.test("istio oracle: istio-cni excludes outbound 15020 unless the pod says otherwise", () => {
  assert.deepEqual(istioFlags({}, { installer: "cni" }).excludeOutboundPorts, [15020]);
  assert.deepEqual(
    istioFlags({ [`${T}excludeOutboundPorts`]: "9090" }, { installer: "cni" }).excludeOutboundPorts,
    [9090],
  );
  assert.deepEqual(istioFlags({}, { installer: "cni" }).excludeInboundPorts, [15020, 15021, 15090]);
  assert.deepEqual(
    istioFlags({ "status.sidecar.istio.io/port": "15030", [`${T}excludeInboundPorts`]: "9091" }, {
      installer: "cni",
    }).excludeInboundPorts,
    [9091, 15030, 15020, 15021, 15090],
    "15020 stays excluded under istio-cni whatever the status port",
  );
  assert.deepEqual(istioFlags({}).excludeOutboundPorts, []);
});

Deno.test("istio oracle: a loopback included range keeps the app's own-pod traffic capturable", () => {
  const rules = out(
    istioNatRules(istioFlags({ [`${T}includeOutboundIPRanges`]: "127.0.0.0/8,10.1.0.0/16" })),
  );
  assert.ok(!rules.some((r) => r.includes("-o lo -m owner !")), rules.join("\n"));
  assert.ok(rules.includes("-A ISTIO_OUTPUT -d 127.0.0.0/8 -j ISTIO_REDIRECT"));
});

Deno.test("istio oracle: values Istio refuses are refused, not guessed", () => {
  assert.throws(() => istioFlags({ [`${T}excludeOutboundIPRanges`]: "*" }), IstioRejects);
  assert.throws(() => istioFlags({ [`${T}excludeOutboundIPRanges`]: "10.1.2.3" }), IstioRejects);
  assert.throws(() => istioFlags({ [`${T}excludeOutboundPorts`]: "80-90" }), IstioRejects);
  assert.throws(() => istioFlags({ [`${T}includeOutboundPorts`]: "*" }), IstioRejects);
});

Deno.test("istio oracle: the restore text is one nat table with a COMMIT", () => {
  const text = istioIptablesRestore({});
  assert.match(text, /^\*nat\n-N ISTIO_INBOUND\n/);
  assert.match(text, /\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n$/);
});

Deno.test("istio oracle: the ip6tables rules of a dual-stack pod use ::6, ::1 and the IPv6 ranges only", () => {
  const f = istioFlags({
    [`${T}excludeOutboundIPRanges`]: "10.96.0.0/12,fd00:96::/64",
    [`${T}includeOutboundIPRanges`]: "10.0.0.0/8,fd00::/8",
  });
  const six = istioNatRules(f, 6).filter((r) => r.startsWith("-A ISTIO_OUTPUT"));
  assert.deepEqual(six, [
    "-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN",
    "-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
    "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
    "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -d ::1/128 -j RETURN",
    "-A ISTIO_OUTPUT -d fd00:96::/64 -j RETURN",
    "-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT",
    "-A ISTIO_OUTPUT -j RETURN",
  ]);
  const four = istioNatRules(f, 4);
  assert.ok(four.includes("-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN"));
  assert.ok(!four.some((r) => r.includes("fd00")), "no IPv6 range in the IPv4 rules");
  // Only IPv4 ranges included: the IPv6 rules redirect nothing by address.
  const only4 = istioNatRules(istioFlags({ [`${T}includeOutboundIPRanges`]: "10.0.0.0/8" }), 6);
  assert.ok(!only4.some((r) => r.includes("-j ISTIO_REDIRECT") && r.includes("ISTIO_OUTPUT")));
  assert.throws(() => istioFlags({ [`${T}excludeOutboundIPRanges`]: "fd00::/129" }), IstioRejects);
});
