import assert from "node:assert/strict";
import { loadAll } from "js-yaml";
import { PodTable } from "../../src/daemon/pod_table.ts";
import {
  documentPieces,
  FilePodSource,
  parsePodsYaml,
  PodsFileError,
  podsOfNode,
} from "../../src/pods/file_source.ts";
import type { Pod } from "../../src/pods/source.ts";

Deno.test("pods YAML: Pod, PodList and List documents; clear errors", () => {
  const text = `kind: Pod
metadata: {name: a}
---
kind: PodList
items:
- metadata: {name: b}
  spec: {nodeName: n1}
- metadata: {name: c}
  spec: {nodeName: n2}
---
kind: List
items:
- kind: Service
  metadata: {name: s}
- kind: Pod
  metadata: {name: d}
`;
  const pods = parsePodsYaml("f.yaml", text);
  assert.deepEqual(pods.map((p) => p.metadata?.name), ["a", "b", "c", "d"]);
  assert.deepEqual(podsOfNode(pods, "n1").map((p) => p.metadata?.name), ["a", "b", "d"]);
  assert.throws(
    () => parsePodsYaml("f.yaml", "kind: Service\nmetadata: {name: x}"),
    /f.yaml: document 1 has kind "Service"/,
  );
  assert.throws(() => parsePodsYaml("f.yaml", "kind: Pod\nmetadata: [x"), PodsFileError);
  assert.throws(() => parsePodsYaml("f.yaml", "kind: Pod\nmetadata: {}"), /without metadata.name/);
  assert.throws(() => parsePodsYaml("f.yaml", "- 1\n- 2"), /not a mapping/);
});

Deno.test("FilePodSource: first snapshot at start, changes delivered, a broken file keeps the last good set", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/pods.yaml`;
  await Deno.writeTextFile(path, "kind: Pod\nmetadata: {name: a}\n");
  const src = new FilePodSource(path, "n1");
  const snaps: Pod[][] = [];
  try {
    await src.start((p) => snaps.push(p));
    assert.equal(snaps.length, 1);
    await Deno.writeTextFile(path, "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: b}\n");
    for (let i = 0; i < 50 && snaps.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(snaps.at(-1)!.map((p) => p.metadata?.name), ["a", "b"]);
    await Deno.writeTextFile(path, "kind: Pod\nmetadata: [broken");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(snaps.length, 2, "no snapshot from a broken file");
    assert.equal(src.stats().errors >= 1, true);
    assert.equal((await src.get("default", "b"))?.metadata?.name, "b", "the last good set is still served");
  } finally {
    await src.stop();
    await Deno.remove(dir, { recursive: true });
  }
  const bad = new FilePodSource(`${dir}/missing.yaml`, "n1");
  await assert.rejects(() => bad.start(() => {}), /missing.yaml: does not exist/);
});

Deno.test("pods YAML by pieces: the same documents as the whole file; unchanged ones come back as the same objects", () => {
  const texts = [
    "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: b}\n",
    "---\nkind: Pod\nmetadata: {name: a}\n---\n---\n",
    "# comment\n--- {kind: Pod, metadata: {name: a}}\n...\n---\nkind: Pod\nmetadata:\n  name: b\n",
    "kind: Pod\nmetadata:\n  name: a\n  annotations:\n    x: |\n      ---not a marker\n      line\n---\n",
    "",
    "---",
  ];
  for (const t of texts) {
    assert.deepEqual(documentPieces(t)!.flatMap((p) => loadAll(p)), loadAll(t), JSON.stringify(t));
  }
  assert.equal(documentPieces("%YAML 1.2\n---\na: 1\n"), undefined, "directives: parsed whole");

  const doc = (name: string, port = "") =>
    `kind: Pod\nmetadata:\n  name: ${name}\n  annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: "${port}"}\n---\n`;
  const cache = new Map();
  const first = parsePodsYaml("f.yaml", doc("a") + doc("b") + doc("c"), cache);
  const second = parsePodsYaml("f.yaml", doc("a") + doc("b", "9090") + doc("c"), cache);
  assert.equal(second[0], first[0]);
  assert.notEqual(second[1], first[1]);
  assert.equal(second[1]!.metadata?.annotations?.["traffic.sidecar.istio.io/excludeOutboundPorts"], "9090");
  assert.equal(second[2], first[2]);
  // A broken piece is reported as the whole file's parse reports it.
  assert.throws(
    () => parsePodsYaml("f.yaml", doc("a") + "kind: Pod\nmetadata: [x\n", cache),
    /not valid YAML/,
  );

  // The table keeps the entries of the same objects as they were: only b's is new.
  const table = new PodTable("istio");
  table.set(first);
  const before = table.entries();
  assert.equal(table.set(second), 1);
  const after = table.entries();
  assert.equal(after[0], before[0]);
  assert.notEqual(after[1], before[1]);
  assert.equal(after[2], before[2]);
  assert.equal(
    table.set(parsePodsYaml("f.yaml", doc("a") + doc("b", "9090") + doc("c"))),
    0,
    "equal: no change",
  );
});
