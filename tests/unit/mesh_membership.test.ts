import assert from "node:assert/strict";
import type { Container, Pod } from "kubernetes-types/core/v1.d.ts";
import { isInMesh, podEntry, podIPv4, podIPv6, PROXY_CONTAINER } from "../../src/mesh/membership.ts";
import { defaultPolicy } from "../../src/mesh/policy.ts";
import { MESH_MODES, type MeshMode } from "../../src/mesh/types.ts";

interface PodSpecBits {
  containers?: string[];
  sidecars?: string[]; // init containers with restartPolicy Always
  inits?: string[]; // plain init containers
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  hostNetwork?: boolean;
  phase?: string;
  podIP?: string;
  podIPs?: string[];
}

function pod(b: PodSpecBits = {}): Pod {
  const c = (name: string): Container => ({ name, image: "example/" + name });
  return {
    metadata: { name: "web-0", namespace: "shop", uid: "u-1", annotations: b.annotations, labels: b.labels },
    spec: {
      containers: (b.containers ?? ["app"]).map(c),
      initContainers: [
        ...(b.inits ?? []).map(c),
        ...(b.sidecars ?? []).map((n) => ({ ...c(n), restartPolicy: "Always" })),
      ],
      hostNetwork: b.hostNetwork,
    },
    status: {
      phase: b.phase ?? "Running",
      podIP: b.podIP,
      podIPs: b.podIPs?.map((ip) => ({ ip })),
    },
  };
}

Deno.test("isInMesh: istio", async (t) => {
  const cases: [string, PodSpecBits, boolean][] = [
    ["plain pod", {}, false],
    ["istio-proxy container", { containers: ["app", "istio-proxy"] }, true],
    ["istio-proxy native sidecar", { sidecars: ["istio-proxy"] }, true],
    ["istio-proxy as a plain init container does not count", { inits: ["istio-proxy"] }, false],
    ["status annotation", { annotations: { "sidecar.istio.io/status": "{}" } }, true],
    ["inject=false without proxy", {
      annotations: { "sidecar.istio.io/status": "{}", "sidecar.istio.io/inject": "false" },
    }, false],
    ["inject=false loses to a proxy container", {
      containers: ["app", "istio-proxy"],
      annotations: { "sidecar.istio.io/inject": "false" },
    }, true],
    ["inject label=false without proxy", {
      labels: { "sidecar.istio.io/inject": "false" },
      annotations: { "sidecar.istio.io/status": "{}" },
    }, false],
    ["label true beats annotation false", {
      labels: { "sidecar.istio.io/inject": "true" },
      annotations: { "sidecar.istio.io/inject": "false", "sidecar.istio.io/status": "{}" },
    }, true],
    ["inject=true alone is not injection", { annotations: { "sidecar.istio.io/inject": "true" } }, false],
    ["inject=TRUE with status", {
      annotations: { "sidecar.istio.io/inject": "TRUE", "sidecar.istio.io/status": "{}" },
    }, true],
    ["inject=disabled counts as a refusal", {
      annotations: { "sidecar.istio.io/inject": "disabled", "sidecar.istio.io/status": "{}" },
    }, false],
    ["hostNetwork with proxy", { containers: ["istio-proxy"], hostNetwork: true }, false],
    ["Succeeded", { containers: ["istio-proxy"], phase: "Succeeded" }, false],
    ["Failed", { containers: ["istio-proxy"], phase: "Failed" }, false],
    ["Pending with proxy", { containers: ["istio-proxy"], phase: "Pending" }, true],
    ["linkerd proxy is not istio", { containers: ["linkerd-proxy"] }, false],
  ];
  for (const [name, bits, want] of cases) {
    await t.step(name, () => assert.equal(isInMesh(pod(bits), "istio"), want));
  }
});

Deno.test("isInMesh: linkerd, kuma, osm", async (t) => {
  const cases: [MeshMode, string, PodSpecBits, boolean][] = [
    ["linkerd", "plain", {}, false],
    ["linkerd", "container", { containers: ["app", "linkerd-proxy"] }, true],
    ["linkerd", "native sidecar", { sidecars: ["linkerd-proxy"] }, true],
    [
      "linkerd",
      "proxy-version annotation",
      { annotations: { "linkerd.io/proxy-version": "edge-24.1.1" } },
      true,
    ],
    ["linkerd", "hostNetwork", { containers: ["linkerd-proxy"], hostNetwork: true }, false],
    ["kuma", "plain", {}, false],
    ["kuma", "container", { containers: ["app", "kuma-sidecar"] }, true],
    ["kuma", "sidecar-injected true", { annotations: { "kuma.io/sidecar-injected": "true" } }, true],
    ["kuma", "sidecar-injected false", { annotations: { "kuma.io/sidecar-injected": "false" } }, false],
    ["kuma", "Failed", { containers: ["kuma-sidecar"], phase: "Failed" }, false],
    ["osm", "plain", {}, false],
    ["osm", "envoy alone is not enough", { containers: ["app", "envoy"] }, false],
    ["osm", "envoy + proxy uuid label", {
      containers: ["app", "envoy"],
      labels: { "osm-proxy-uuid": "1f2e" },
    }, true],
    ["osm", "envoy + injection enabled", {
      containers: ["app", "envoy"],
      annotations: { "openservicemesh.io/sidecar-injection": "enabled" },
    }, true],
    ["osm", "envoy + injection disabled", {
      containers: ["app", "envoy"],
      annotations: { "openservicemesh.io/sidecar-injection": "disabled" },
    }, false],
    ["osm", "label without envoy", { labels: { "osm-proxy-uuid": "1f2e" } }, false],
  ];
  for (const [mode, name, bits, want] of cases) {
    await t.step(`${mode}: ${name}`, () => assert.equal(isInMesh(pod(bits), mode), want));
  }
  await t.step("every mode names a proxy container", () => {
    for (const mode of MESH_MODES) assert.ok(PROXY_CONTAINER[mode].length > 0);
  });
});

Deno.test("podIPv4", async (t) => {
  const cases: [string, PodSpecBits, string][] = [
    ["podIP", { podIP: "10.1.0.5", podIPs: ["10.1.0.5"] }, "10.1.0.5"],
    ["no IP yet", {}, ""],
    ["IPv6 primary, IPv4 secondary", { podIP: "fd00::5", podIPs: ["fd00::5", "10.1.0.6"] }, "10.1.0.6"],
    ["IPv6 only", { podIP: "fd00::5", podIPs: ["fd00::5"] }, ""],
    ["only podIPs", { podIPs: ["10.1.0.7"] }, "10.1.0.7"],
    ["garbage podIP", { podIP: "not-an-ip", podIPs: ["10.1.0.8"] }, "10.1.0.8"],
  ];
  for (const [name, bits, want] of cases) {
    await t.step(name, () => assert.equal(podIPv4(pod(bits)), want));
  }
});

Deno.test("podIPv6", async (t) => {
  const cases: [string, PodSpecBits, string][] = [
    ["dual stack, IPv4 primary", { podIP: "10.1.0.5", podIPs: ["10.1.0.5", "FD00:0::5"] }, "fd00::5"],
    ["IPv6 primary", { podIP: "fd00::5", podIPs: ["fd00::5", "10.1.0.6"] }, "fd00::5"],
    ["IPv4 only", { podIP: "10.1.0.5", podIPs: ["10.1.0.5"] }, ""],
    ["a v4-mapped address is IPv4", { podIPs: ["::ffff:10.1.0.5"] }, ""],
    ["garbage", { podIP: "fd00:::5", podIPs: ["x", "fd00::7"] }, "fd00::7"],
  ];
  for (const [name, bits, want] of cases) {
    await t.step(name, () => assert.equal(podIPv6(pod(bits)), want));
  }
  await t.step("podEntry carries both", () => {
    const e = podEntry(pod({ podIP: "10.1.0.5", podIPs: ["10.1.0.5", "fd00::5"] }), "istio");
    assert.equal(e.ip, "10.1.0.5");
    assert.equal(e.ip6, "fd00::5");
  });
});

Deno.test("podEntry", async (t) => {
  await t.step("meshed pod with annotations", () => {
    const e = podEntry(
      pod({
        containers: ["app", "istio-proxy"],
        podIP: "10.1.0.5",
        annotations: { "traffic.sidecar.istio.io/excludeOutboundPorts": "5432, nope" },
      }),
      "istio",
    );
    assert.equal(e.namespace, "shop");
    assert.equal(e.name, "web-0");
    assert.equal(e.uid, "u-1");
    assert.equal(e.ip, "10.1.0.5");
    assert.equal(e.inMesh, true);
    assert.deepEqual(e.policy.excludeOutboundPorts, { all: false, ranges: [{ from: 5432, to: 5432 }] });
    assert.equal(e.warnings.length, 1);
    assert.equal(e.warnings[0]?.item, "nope");
  });

  await t.step("pod outside the mesh still gets its policy decoded", () => {
    const e = podEntry(pod({ podIP: "10.1.0.9" }), "linkerd");
    assert.equal(e.inMesh, false);
    assert.deepEqual(e.policy, defaultPolicy("linkerd"));
  });

  await t.step("bare pod object (as read from a file)", () => {
    const e = podEntry({}, "kuma");
    assert.deepEqual(
      { namespace: e.namespace, name: e.name, uid: e.uid, ip: e.ip, inMesh: e.inMesh },
      { namespace: "default", name: "", uid: "", ip: "", inMesh: false },
    );
  });
});
