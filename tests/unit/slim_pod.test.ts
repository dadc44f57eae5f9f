import assert from "node:assert/strict";
import { type Pod, slimPod } from "../../src/pods/source.ts";
import { podEntry } from "../../src/mesh/membership.ts";
import { MESH_MODES } from "../../src/mesh/types.ts";
import { parsePodsYaml, type PieceCache } from "../../src/pods/file_source.ts";

/** A pod as the API serves it, with the bulk a real one carries. */
function apiPod(
  over: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> },
): Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: over.name,
      namespace: "shop",
      uid: `uid-${over.name}`,
      resourceVersion: "42",
      labels: over.labels,
      annotations: over.annotations,
      managedFields: [{ manager: "kubelet", operation: "Update", fieldsV1: { "f:status": { "f:x": {} } } }],
    },
    spec: {
      nodeName: "node-a",
      containers: [
        { name: "app", image: "app:1", env: [{ name: "A", value: "x".repeat(2000) }] },
        { name: "istio-proxy", image: "proxyv2", args: ["proxy", "sidecar"] },
      ],
      initContainers: [{ name: "envoy", image: "envoy", restartPolicy: "Always" }],
      volumes: [{ name: "v", emptyDir: {} }],
    },
    status: {
      phase: "Running",
      podIP: "10.1.0.5",
      podIPs: [{ ip: "10.1.0.5" }, { ip: "fd00::5" }],
      conditions: [{ type: "Ready", status: "True" }],
    },
  };
}

function hostNetwork(p: Pod): Pod {
  p.spec!.hostNetwork = true;
  return p;
}

Deno.test("a slimmed pod decodes to the same entry as the whole pod, in every mesh mode", () => {
  const pods: Pod[] = [
    apiPod({ name: "a", annotations: { "sidecar.istio.io/status": "{}" } }),
    apiPod({ name: "b", labels: { "osm-proxy-uuid": "1" } }),
    apiPod({ name: "c", annotations: { "traffic.sidecar.istio.io/excludeOutboundPorts": "9090,x" } }),
    hostNetwork(apiPod({ name: "d" })),
  ];
  for (const mode of MESH_MODES) {
    for (const p of pods) {
      assert.deepEqual(podEntry(slimPod(p), mode), podEntry(p, mode), `${mode} ${p.metadata?.name}`);
    }
  }
  const slim = slimPod(pods[0]!);
  assert.equal(slim.metadata?.managedFields, undefined);
  assert.deepEqual(slim.spec?.containers, [{ name: "app" }, { name: "istio-proxy" }]);
  assert.deepEqual(slim.spec?.initContainers, [{ name: "envoy", restartPolicy: "Always" }]);
  assert.ok(JSON.stringify(slim).length * 5 < JSON.stringify(pods[0]).length);
});

Deno.test("pods file: a field of the wrong shape is still reported after slimming", () => {
  assert.throws(
    () => parsePodsYaml("p.yaml", "kind: Pod\nmetadata: [1]\n"),
    /document 1: metadata is not a mapping/,
  );
  const cache: PieceCache = new Map();
  const text = "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: app, image: x}]}\n";
  const first = parsePodsYaml("p.yaml", text, cache);
  assert.deepEqual(first[0]?.spec?.containers, [{ name: "app" }]);
  assert.equal(parsePodsYaml("p.yaml", text, cache)[0], first[0]);
});
