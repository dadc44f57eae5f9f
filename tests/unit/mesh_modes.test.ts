import assert from "node:assert/strict";
import { isMeshMode, meshParams, parseMeshMode, UnknownMeshModeError } from "../../src/mesh/modes.ts";
import { MESH_MODES } from "../../src/mesh/types.ts";
import { MAX_ALWAYS_EXCLUDED } from "../../src/generated/bpf_types.ts";

Deno.test("meshParams", async (t) => {
  await t.step("istio", () => {
    assert.deepEqual(meshParams("istio"), {
      mode: "istio",
      outboundPort: 15001,
      inboundPort: 15006,
      dnsPort: 15053,
      proxyUid: 1337,
      proxyGid: 1337,
      alwaysExcludedInboundPorts: [15008, 15090, 15021],
      selfInbound: true,
      tunnelPort: 15008,
    });
  });
  await t.step("linkerd", () => {
    assert.deepEqual(meshParams("linkerd"), {
      mode: "linkerd",
      outboundPort: 4140,
      inboundPort: 4143,
      dnsPort: 0,
      proxyUid: 2102,
      proxyGid: 2102,
      alwaysExcludedInboundPorts: [4190, 4191],
      selfInbound: false,
      tunnelPort: 0,
    });
  });
  await t.step("kuma", () => {
    assert.deepEqual(meshParams("kuma"), {
      mode: "kuma",
      outboundPort: 15001,
      inboundPort: 15006,
      dnsPort: 15053,
      proxyUid: 5678,
      proxyGid: 5678,
      alwaysExcludedInboundPorts: [9901],
      selfInbound: true,
      tunnelPort: 0,
    });
  });
  await t.step("osm", () => {
    assert.deepEqual(meshParams("osm"), {
      mode: "osm",
      outboundPort: 15001,
      inboundPort: 15003,
      dnsPort: 0,
      proxyUid: 1500,
      proxyGid: 1500,
      alwaysExcludedInboundPorts: [15010, 15901, 15902, 15903, 15904],
      selfInbound: true,
      tunnelPort: 0,
    });
  });
  await t.step("every mode fits the BPF layout and never uses gid 0", () => {
    for (const mode of MESH_MODES) {
      const p = meshParams(mode);
      assert.ok(p.alwaysExcludedInboundPorts.length <= MAX_ALWAYS_EXCLUDED, mode);
      assert.notEqual(p.proxyGid, 0, mode);
      assert.notEqual(p.proxyUid, 0, mode);
      assert.equal(p.alwaysExcludedInboundPorts.includes(p.inboundPort), false, mode);
    }
  });
  await t.step("returns a copy", () => {
    meshParams("istio").alwaysExcludedInboundPorts.push(1);
    assert.equal(meshParams("istio").alwaysExcludedInboundPorts.length, 3);
  });
  await t.step("unknown mode passed around type checks", () => {
    assert.throws(() => meshParams("consul" as never), UnknownMeshModeError);
  });
});

Deno.test("parseMeshMode", async (t) => {
  await t.step("valid, with case and spaces ignored", () => {
    assert.equal(parseMeshMode("istio"), "istio");
    assert.equal(parseMeshMode(" Linkerd "), "linkerd");
    assert.equal(parseMeshMode("OSM"), "osm");
    for (const m of MESH_MODES) assert.equal(parseMeshMode(m), m);
  });
  await t.step("invalid: the error names the value and every valid mode", () => {
    for (const bad of ["", "consul", "istio,linkerd", "ist io"]) {
      assert.throws(
        () => parseMeshMode(bad),
        (e: unknown) => {
          assert.ok(e instanceof UnknownMeshModeError);
          assert.equal(e.value, bad);
          assert.ok(e.message.includes(`"${bad}"`), e.message);
          for (const m of MESH_MODES) assert.ok(e.message.includes(m), e.message);
          return true;
        },
      );
    }
  });
  await t.step("isMeshMode", () => {
    assert.equal(isMeshMode("kuma"), true);
    assert.equal(isMeshMode("Kuma"), false);
  });
});
