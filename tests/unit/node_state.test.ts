// The node's pod-keyed state without the kernel: the desired contents of local_pods, pod_counters,
// mark_pod_ips and netns_pod_ips from the pod table, the CNI attachments and the namespaces found,
// and the writer that reaches them with the fewest writes.
import assert from "node:assert/strict";
import { type AttachedPod, desiredNodeState, NodeStateWriter } from "../../src/daemon/node_state.ts";
import type { AttachmentRecord } from "../../src/daemon/state_store.ts";
import { encodePodConfig } from "../../src/maps/layouts.ts";
import { defaultPolicy, podPolicy } from "../../src/mesh/policy.ts";
import type { PodEntry, PodPolicy } from "../../src/mesh/types.ts";
import type { NetnsInfo } from "../../src/netns/discover.ts";
import { FakePodMaps } from "./fake_pod_maps.ts";

const FALLBACK = defaultPolicy("istio");
const EXCLUDE_9090 = podPolicy({ "traffic.sidecar.istio.io/excludeOutboundPorts": "9090" }, "istio").policy;

function pod(name: string, ip: string, o: Partial<PodEntry> = {}): PodEntry {
  return {
    namespace: "default",
    name,
    uid: `uid-${name}`,
    ip,
    inMesh: true,
    policy: FALLBACK,
    warnings: [],
    ...o,
  };
}

function attached(name: string, ip: string, mark: number, cookie?: bigint, policy?: PodPolicy): AttachedPod {
  const rec: AttachmentRecord = {
    containerId: `ctr-${name}`,
    ifName: "eth0",
    netns: `/run/netns/${name}`,
    podNamespace: "default",
    podName: name,
    podIp: ip,
    mark,
    hook: "xdp",
    txChanged: false,
    createdAt: "2026-01-01T00:00:00Z",
    ...(cookie !== undefined ? { netnsCookie: String(cookie) } : {}),
  };
  return { rec, ...(policy ? { policy } : {}) };
}

function ns(ino: string, cookie: bigint, ips: string[]): NetnsInfo {
  return { ino, path: `/run/netns/${ino}`, cookie, ips, firstSeen: 0, readAt: 0 };
}

Deno.test("desiredNodeState: a dual-stack pod is keyed by both IPs in local_pods and pod_counters", () => {
  const d = desiredNodeState({
    pods: [
      pod("ds", "10.0.0.4", { ip6: "fd00::4", policy: EXCLUDE_9090 }),
      pod("six", "", { ip6: "fd00::6" }),
    ],
    attached: [],
    namespaces: [ns("1", 11n, ["fd00::4"])],
    fallbackPolicy: FALLBACK,
  });
  assert.deepEqual([...d.localPods.keys()].sort(), ["10.0.0.4", "fd00::4", "fd00::6"]);
  assert.equal(d.localPods.get("10.0.0.4"), EXCLUDE_9090);
  assert.equal(d.localPods.get("fd00::4"), EXCLUDE_9090, "the same policy under each address");
  assert.deepEqual([...d.podCounters].sort(), ["10.0.0.4", "fd00::4", "fd00::6"]);
  // Found by its IPv6 alone, the namespace entry carries both addresses.
  assert.deepEqual([...d.netnsPods].map(([c, i]) => [c, i.ip, i.ip6, i.via]), [[
    11n,
    "10.0.0.4",
    "fd00::4",
    "netns",
  ]]);
  assert.equal(d.marks.size, 0, "no CNI attachment, no mark");
});

Deno.test("desiredNodeState: an attachment for a pod the source does not list keeps all its entries", () => {
  const d = desiredNodeState({
    pods: [pod("a", "10.0.0.1")],
    attached: [
      attached("ghost", "10.0.0.9", 7001, 91n, EXCLUDE_9090),
      attached("nopolicy", "10.0.0.8", 7002, 92n),
    ],
    namespaces: [],
    fallbackPolicy: FALLBACK,
  });
  assert.equal(d.localPods.get("10.0.0.9"), EXCLUDE_9090, "the policy it was attached with");
  assert.equal(d.localPods.get("10.0.0.8"), FALLBACK, "none known: the mode's default");
  assert.ok(d.podCounters.has("10.0.0.9") && d.podCounters.has("10.0.0.8"));
  assert.deepEqual(d.marks.get(7001), { ip4: "10.0.0.9", ip6: "" });
  assert.deepEqual([d.netnsPods.get(91n)?.via, d.netnsPods.get(91n)?.ip], ["cni", "10.0.0.9"]);
  // The source's policy wins over the one at ADD as soon as the source lists the pod.
  const listed = desiredNodeState({
    pods: [pod("ghost", "10.0.0.9", { policy: FALLBACK, ip6: "fd00::9" })],
    attached: [attached("ghost", "10.0.0.9", 7001, 91n, EXCLUDE_9090)],
    namespaces: [],
    fallbackPolicy: FALLBACK,
  });
  assert.equal(listed.localPods.get("10.0.0.9"), FALLBACK);
  assert.equal(listed.netnsPods.get(91n)?.ip6, "fd00::9", "the CNI entry gets the IPv6 from the source");
});

Deno.test("desiredNodeState: a pod leaving the mesh leaves no entry in any map", () => {
  const inputs = (p: PodEntry, withAttachment: boolean) => ({
    pods: [p, pod("other", "10.0.0.2")],
    attached: withAttachment ? [attached("a", "10.0.0.1", 7001, 71n)] : [],
    namespaces: [ns("1", 11n, ["10.0.0.1", "fd00::1"]), ns("2", 12n, ["10.0.0.2"])],
    fallbackPolicy: FALLBACK,
  });
  const maps = new FakePodMaps();
  const writer = new NodeStateWriter(maps);
  writer.apply(desiredNodeState(inputs(pod("a", "10.0.0.1", { ip6: "fd00::1" }), true)));
  assert.deepEqual([...maps.pods.keys()].sort(), ["10.0.0.1", "10.0.0.2", "fd00::1"]);
  assert.deepEqual([...maps.netns.keys()].sort(), [11n, 12n, 71n]);
  assert.deepEqual([...maps.marks.keys()], [7001]);

  // Out of the mesh (its DEL came too): nothing of it is left anywhere.
  maps.writes = [];
  const w = writer.apply(
    desiredNodeState(inputs(pod("a", "10.0.0.1", { ip6: "fd00::1", inMesh: false }), false)),
  );
  assert.deepEqual([...maps.pods.keys()], ["10.0.0.2"]);
  assert.deepEqual([...maps.counters], ["10.0.0.2"]);
  assert.deepEqual([...maps.netns.keys()], [12n]);
  assert.equal(maps.marks.size, 0);
  assert.deepEqual(maps.writes.sort(), [
    "del counters 10.0.0.1",
    "del counters fd00::1",
    "del mark 7001",
    "del netns 11",
    "del netns 71",
    "del pod 10.0.0.1",
    "del pod fd00::1",
  ]);
  assert.deepEqual(w.localPods, { added: 0, updated: 0, removed: 2 });
});

Deno.test("desiredNodeState: marks a lost record left are kept for meshed pods only", () => {
  const d = desiredNodeState({
    pods: [pod("a", "10.0.0.1"), pod("b", "10.0.0.2", { inMesh: false })],
    attached: [attached("c", "10.0.0.3", 7003)],
    namespaces: [],
    orphanMarks: new Map([[7001, "10.0.0.1"], [7002, "10.0.0.2"], [7003, "10.0.0.1"]]),
    fallbackPolicy: FALLBACK,
  });
  assert.deepEqual([...d.marks].sort(), [[7001, { ip4: "10.0.0.1", ip6: "" }], [7003, {
    ip4: "10.0.0.3",
    ip6: "",
  }]]);
});

Deno.test("NodeStateWriter: one pod changed among a thousand is one write, with no map read back", () => {
  const pods = Array.from({ length: 1000 }, (_, i) => pod(`p${i}`, `10.1.${i >> 8}.${i & 255}`));
  const inputs = (list: PodEntry[]) => ({
    pods: list,
    attached: [],
    namespaces: [],
    fallbackPolicy: FALLBACK,
  });
  const maps = new FakePodMaps();
  const writer = new NodeStateWriter(maps);
  writer.apply(desiredNodeState(inputs(pods)));
  assert.equal(maps.pods.size, 1000);
  const walks = maps.walks;
  maps.writes = [];
  const next = [...pods];
  next[5] = { ...pods[5]!, policy: EXCLUDE_9090 };
  writer.apply(desiredNodeState(inputs(next)));
  assert.deepEqual(maps.writes, ["pod 10.1.0.5"]);
  assert.equal(maps.walks, walks, "the writer's own view, not the maps, says what is there");
  assert.deepEqual(maps.pods.get("10.1.0.5"), encodePodConfig(EXCLUDE_9090));
  // An equal policy in a new object is not a write either.
  maps.writes = [];
  next[5] = { ...next[5]!, policy: structuredClone(EXCLUDE_9090) };
  writer.apply(desiredNodeState(inputs(next)));
  assert.deepEqual(maps.writes, []);
});

Deno.test("NodeStateWriter: a restart rewrites nothing that is right; add-only touches no existing entry", () => {
  const maps = new FakePodMaps();
  const inputs = {
    pods: [pod("a", "10.0.0.1", { policy: EXCLUDE_9090 })],
    attached: [attached("a", "10.0.0.1", 7001, 71n)],
    namespaces: [ns("1", 11n, ["10.0.0.1"])],
    fallbackPolicy: FALLBACK,
  };
  new NodeStateWriter(maps).apply(desiredNodeState(inputs));
  maps.writes = [];
  new NodeStateWriter(maps).apply(desiredNodeState(inputs));
  assert.deepEqual(maps.writes, [], "found right in the maps");

  // Before the first pod snapshot: the attachments' entries come back, nothing else is touched.
  maps.marks.delete(7001);
  maps.netns.set(55n, { ip4: "10.9.9.9", ip6: "" });
  maps.writes = [];
  new NodeStateWriter(maps).apply(
    desiredNodeState({ ...inputs, pods: [], namespaces: undefined }),
    { addOnly: true },
  );
  assert.deepEqual(maps.writes, ["mark 7001 10.0.0.1"]);
  assert.deepEqual(
    maps.pods.get("10.0.0.1"),
    encodePodConfig(EXCLUDE_9090),
    "not overwritten by the default",
  );
});

Deno.test("NodeStateWriter: resync reads the maps again and puts back what someone else removed", () => {
  const maps = new FakePodMaps();
  const writer = new NodeStateWriter(maps);
  const d = desiredNodeState({
    pods: [pod("a", "10.0.0.1")],
    attached: [],
    namespaces: [],
    fallbackPolicy: FALLBACK,
  });
  writer.apply(d);
  maps.pods.clear();
  maps.writes = [];
  writer.apply(d);
  assert.deepEqual(maps.writes, [], "trusting its own view");
  writer.resync();
  writer.apply(d);
  assert.deepEqual(maps.writes, ["pod 10.0.0.1"]);
});

Deno.test("NodeStateWriter: a full map fails the pass but not the other maps; the next pass retries", () => {
  const maps = new FakePodMaps();
  let full = true;
  const put = maps.putPodBytes.bind(maps);
  maps.putPodBytes = (ip, b) => {
    if (full) throw new Error("local_pods is full");
    put(ip, b);
  };
  const writer = new NodeStateWriter(maps);
  const d = desiredNodeState({
    pods: [pod("a", "10.0.0.1")],
    attached: [attached("a", "10.0.0.1", 7001, 71n)],
    namespaces: [],
    fallbackPolicy: FALLBACK,
  });
  assert.throws(() => writer.apply(d), /full/);
  assert.deepEqual([...maps.marks.keys()], [7001]);
  assert.deepEqual([...maps.netns.keys()], [71n]);
  assert.equal(maps.pods.size, 0);
  full = false;
  writer.apply(d);
  assert.deepEqual([...maps.pods.keys()], ["10.0.0.1"]);
});
