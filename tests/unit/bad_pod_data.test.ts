// Pod data is user input: YAML scalars where strings belong, structures of the wrong shape, and huge
// annotation lists must neither stop the agent nor change what it does for the other pods.
import assert from "node:assert/strict";
import { join } from "node:path";
import { PodTable } from "../../src/daemon/pod_table.ts";
import { FilePodSource, parsePodsYaml, PodsFileError } from "../../src/pods/file_source.ts";
import type { Pod } from "../../src/pods/source.ts";

const good = (name: string, ip: string) =>
  `---\nkind: Pod\nmetadata: {name: ${name}, namespace: default, annotations: {sidecar.istio.io/status: "{}"}}\n` +
  `spec: {containers: [{name: app}, {name: istio-proxy}]}\nstatus: {phase: Running, podIP: ${ip}}\n`;

Deno.test("YAML booleans and numbers where the API has strings are read as those strings", () => {
  const pods = parsePodsYaml(
    "f.yaml",
    `kind: Pod
metadata:
  name: 1234
  namespace: 42
  labels: {sidecar.istio.io/inject: false, version: 1.10}
  annotations:
    sidecar.istio.io/status: "{}"
    traffic.sidecar.istio.io/excludeOutboundPorts: 9090
    traffic.sidecar.istio.io/includeInboundPorts: 8080
    status.sidecar.istio.io/port: 0
    empty:
spec: {containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.0.9}
`,
  );
  const meta = pods[0]!.metadata!;
  assert.equal(meta.name, "1234");
  assert.equal(meta.namespace, "42");
  assert.equal(meta.labels!["sidecar.istio.io/inject"], "false");
  assert.equal(meta.labels!.version, "1.1", "YAML's float, as js-yaml gives it back");
  assert.equal(meta.annotations!["empty"], "");
  const t = new PodTable("istio");
  t.set(pods);
  const e = t.get("42", "1234")!;
  assert.equal(e.inMesh, false, "inject: false (a YAML boolean) opts the pod out, as the string would");
  assert.equal(e.policy.statusPort, 0);
  assert.deepEqual(e.policy.excludeOutboundPorts.ranges, [{ from: 9090, to: 9090 }]);
});

Deno.test("a file with a pod of the wrong shape is refused whole, naming it; the last good set stays", async () => {
  for (
    const [text, re] of [
      ["kind: Pod\nmetadata: {name: a, annotations: [x, y]}\n", /metadata\.annotations is not a mapping/],
      ["kind: Pod\nmetadata: {name: a, labels: {x: [1]}}\n", /metadata\.labels\.x is not a string/],
      ["kind: Pod\nmetadata: [a]\n", /metadata is not a mapping/],
      ["kind: Pod\nmetadata: {name: {x: 1}}\n", /metadata\.name is not a string/],
      ["kind: PodList\nitems: [7]\n", /not a mapping/],
    ] as const
  ) {
    assert.throws(
      () => parsePodsYaml("f.yaml", text),
      (e) => e instanceof PodsFileError && re.test(e.message),
      text,
    );
  }

  const dir = await Deno.makeTempDir({ prefix: "merbridge-badpods-" });
  const path = join(dir, "pods.yaml");
  try {
    await Deno.writeTextFile(path, good("a", "10.0.0.1") + good("b", "10.0.0.2"));
    const src = new FilePodSource(path, "node-a");
    const seen: Pod[][] = [];
    await src.start((p) => seen.push(p));
    try {
      await Deno.writeTextFile(
        path,
        good("a", "10.0.0.1") + "---\nkind: Pod\nmetadata: {name: c, annotations: [1]}\n",
      );
      assert.equal(await src.get("default", "b") !== undefined, true, "the previous set is still served");
      assert.equal(seen.length, 1, "no snapshot from the broken file");
      assert.ok(src.stats().errors >= 1);
    } finally {
      await src.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("structures the decoder cannot use cost only that pod", () => {
  const weird = [
    { kind: "Pod", metadata: { name: "c1" }, spec: { containers: "istio-proxy" } },
    { kind: "Pod", metadata: { name: "c2" }, spec: { initContainers: 5 } },
    { kind: "Pod", metadata: { name: "c3" }, status: { podIPs: "10.0.0.3" } },
    { kind: "Pod", metadata: { name: "c4", annotations: { "sidecar.istio.io/status": "{}" } }, spec: null },
  ] as unknown as Pod[];
  const t = new PodTable("istio");
  const goodPods = parsePodsYaml("f.yaml", good("a", "10.0.0.1") + good("b", "10.0.0.2"));
  t.set([...weird, ...goodPods]);
  assert.equal(t.get("default", "a")?.inMesh, true);
  assert.equal(t.get("default", "b")?.ip, "10.0.0.2");
  assert.equal(t.counts().meshed, 2, "the others are served whatever became of the weird ones");
});

Deno.test("huge annotation lists are decoded in bounded time and bounded warnings", () => {
  const ports = Array.from({ length: 100_000 }, (_, i) => String((i % 65535) + 1)).join(",");
  const cidrs = Array.from({ length: 20_000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`).join(",");
  const junk = Array.from({ length: 50_000 }, (_, i) => `x${i}`).join(",");
  const pod = {
    kind: "Pod",
    metadata: {
      name: "big",
      namespace: "default",
      annotations: {
        "sidecar.istio.io/status": "{}",
        "traffic.sidecar.istio.io/excludeOutboundPorts": ports,
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": cidrs,
        "traffic.sidecar.istio.io/excludeInboundPorts": junk,
        ...Object.fromEntries(
          Array.from({ length: 5_000 }, (_, i) => [`example.com/a${i}`, "v".repeat(100)]),
        ),
      },
    },
    spec: { containers: [{ name: "app" }, { name: "istio-proxy" }] },
    status: { phase: "Running", podIP: "10.0.0.7" },
  } as unknown as Pod;
  const t = new PodTable("istio");
  const t0 = performance.now();
  t.set([pod, ...parsePodsYaml("f.yaml", good("a", "10.0.0.1"))]);
  const ms = performance.now() - t0;
  assert.ok(ms < 2_000, `decoded in ${ms.toFixed(0)} ms`);
  const e = t.get("default", "big")!;
  assert.equal(e.inMesh, true);
  assert.ok(e.policy.excludeOutboundPorts.ranges.length <= 32, "the stored list fits the datapath's");
  assert.ok(e.warnings.length <= 100, `warnings are bounded: ${e.warnings.length}`);
  assert.equal(t.get("default", "a")?.inMesh, true, "the neighbour is unaffected");
});
