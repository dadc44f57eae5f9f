// Control-plane measurements with the real daemon (main.ts run from source, as the local install
// does) and the real CNI plugins:
// - CNI ADD/DEL through a bridge + host-local chain with our plugin appended by the daemon itself,
//   timing each plugin, so "the bridge plugin alone" and "the chain" come from the same pod creations;
// - the daemon's time from exec to its /readyz answering 200: first start, restarts with pods attached, and
//   sidecar mode;
// - the daemon's memory idle and with 1000 pods in its pods file, and how long 1000 pods take to
//   reach the maps;
// - the time from a change of one pod in the pods file to the changed entry in local_pods;
// - the daemon as it runs in a cluster: pods listed and watched from an API server over TLS with the
//   service account's token (no pods file, so no YAML parser): ready, memory, a pod change to its entry;
// - pod identity without CNI mode: the time from a pod's namespace appearing with its IP to its
//   netns_pod_ips entry, and what one scan of the node's namespaces costs with hundreds of them.
import { PinnedDatapathMaps } from "../src/datapath/datapath.ts";
import {
  bridgeConflist,
  cniExec,
  createNetns,
  type Daemon,
  daemonHome,
  type DaemonProcOptions,
  inNs,
  invocation,
  type PluginRun,
  podDoc,
  podYaml,
  type Proc,
  Scope,
  sleep,
  spawnDaemon,
  stopDaemon as stopProc,
  uniq,
  waitReady,
} from "../testbed/mod.ts";
import { NetnsDiscovery } from "../src/netns/discover.ts";
import { serviceAccountMount, startTlsApiServer } from "../testbed/fake_apiserver.ts";
import { assertPinned, memoryKiB, type Pinning, pinPrefix } from "./procs.ts";

const OUR_PLUGIN = "merbridge-cni";

export interface ControlConfig {
  cniPods: number;
  restarts: number;
  manyPods: number;
  changes: number;
  settleMs: number;
  /** Pods whose identification is timed. */
  identityPods: number;
  /** Namespaces on the node while a scan is timed. */
  scanNamespaces: number;
}

export interface ControlResults {
  cni?: {
    pods: number;
    addBridgeMs: number[];
    addOursMs: number[];
    addChainMs: number[];
    /** The daemon's own handling of an ADD, mean over the run (its merbridge_cni_request_seconds). */
    addDaemonMeanMs?: number;
    delOursMs: number[];
    delBridgeMs: number[];
  };
  daemon?: {
    firstReadyMs: number;
    restartReadyMs: number[];
    sidecarReadyMs: number;
    rssIdleKiB: number;
    rssManyKiB: number;
    hwmManyKiB: number;
    /** The same after a restart, which reopens the pinned programs instead of loading them. */
    sidecarRestartReadyMs?: number;
    rssIdleRestartKiB?: number;
    rssManyRestartKiB?: number;
    manyPods: number;
    manySyncMs: number;
    changeManyMs: number[];
    changeFewMs: number[];
    fewPods: number;
  };
  /** Pods from the API server through the service account, sidecar mode. */
  inCluster?: {
    readyMs: number;
    restartReadyMs: number;
    rssIdleKiB: number;
    rssIdleRestartKiB: number;
    rssManyKiB: number;
    manyPods: number;
    manySyncMs: number;
    /** One pod's annotation changed in the API → its local_pods entry, with manyPods pods. */
    changeManyMs: number[];
  };
  identity?: {
    pods: number;
    /** Namespace with its IP → netns_pod_ips entry, the pod already in the pods file. */
    latencyMs: number[];
    namespaces: number;
    /** Everything listed on the node in the timed scans (ours, other namespaces, processes). */
    candidates: number;
    coldScanMs: number;
    steadyScanMs: number[];
    /** A scan while one wanted IP is in no namespace, every other namespace young and unmatched. */
    missingScanMs: number[];
  };
  errors: string[];
}

interface CniRun extends PluginRun {
  ms: number;
}

interface CniPod {
  name: string;
  ns: string;
  result?: unknown;
}

interface CniEnv {
  node: string;
  binDir: string;
  conflist: string;
}

/** Runs one plugin the way a runtime does (CNI_* environment, config on stdin), pinned, and timed. */
async function cniPlugin(
  pin: Pinning,
  env: CniEnv,
  pod: CniPod,
  command: "ADD" | "DEL",
  plugin: Record<string, unknown>,
  prevResult?: unknown,
): Promise<CniRun> {
  const list = JSON.parse(await Deno.readTextFile(env.conflist));
  const type = String(plugin.type);
  const conf = {
    ...plugin,
    cniVersion: list.cniVersion,
    name: list.name,
    ...(prevResult ? { prevResult } : {}),
  };
  const inv = invocation({
    conflist: env.conflist,
    binDir: env.binDir,
    nodeNs: env.node,
    wrap: pinPrefix(pin),
  }, {
    name: pod.name,
    ns: pod.ns,
    containerId: `ctr-${pod.name}`,
  });
  const t0 = performance.now();
  const r = await cniExec(inv, command, type, conf);
  const ms = performance.now() - t0;
  if (r.code !== 0) {
    throw new Error(`CNI ${command} ${type} for ${pod.name} failed (${r.code}): ${r.stdout} ${r.stderr}`);
  }
  return { ...r, ms };
}

/** Starts the daemon pinned and returns it with the time from spawn to its /readyz answering 200. */
async function timedDaemon(
  scope: Scope,
  pin: Pinning,
  o: DaemonProcOptions,
): Promise<{ p: Daemon; ms: number }> {
  const t0 = performance.now();
  const p = spawnDaemon(scope, o, pinPrefix(pin));
  await waitReady(p, { timeoutMs: 30_000, pollMs: 2 });
  const ms = performance.now() - t0;
  assertPinned(p.pid, pin);
  return { p, ms };
}

async function stopDaemon(p: Proc): Promise<void> {
  const code = await stopProc(p);
  if (code !== 0) throw new Error(`daemon exited ${code} on SIGTERM`);
}

/** Mean of the daemon's own ADD handling so far, from its request-time histogram. */
async function daemonAddMeanMs(d: Daemon): Promise<number | undefined> {
  const text = await (await fetch(`${d.metricsUrl}/metrics`)).text();
  const value = (suffix: string) => {
    const m = new RegExp(`^merbridge_cni_request_seconds_${suffix}\\{op="add"\\} (\\S+)$`, "m").exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const sum = value("sum"), count = value("count");
  return sum !== undefined && count ? (sum / count) * 1000 : undefined;
}

async function markListeners(ns: string): Promise<number> {
  const out = await inNs(ns, "ss", ["-Htln", "sport = :39807"]);
  return out.stdout.split("\n").filter((l) => l.trim()).length;
}

async function cniSection(scope: Scope, pin: Pinning, cfg: ControlConfig, res: ControlResults, dir: string) {
  const prefix = uniq();
  const node = await createNetns(scope, `${prefix}k`);
  const k = Deno.pid % 250;
  const names = Array.from({ length: cfg.cniPods }, (_, i) => `bp${i}`);
  const home = await daemonHome(scope, {
    prefix,
    name: "cni",
    dir: `${dir}/cni`,
    pods: names.map((n) => podYaml(n)).join(""),
  });
  const conflist = `${home.confDir}/10-benchnet.conflist`;
  await Deno.writeTextFile(
    conflist,
    bridgeConflist({ name: "benchnet", subnet: `10.250.${k}.0/24`, ipamDir: home.ipamDir }),
  );
  const opts = { ...home, extra: ["--cni-mode=true"] };
  const { pinPath } = opts;
  // A daemon whose scope ends first: its SIGKILL must come before the namespaces and pins go.
  let daemon = await timedDaemon(scope, pin, opts);
  const firstReadyMs = daemon.ms;
  const list = JSON.parse(await Deno.readTextFile(conflist)) as { plugins: Record<string, unknown>[] };
  const types = list.plugins.map((p) => p.type);
  if (types.join(",") !== `bridge,${OUR_PLUGIN}`) {
    throw new Error(`the daemon did not chain itself: ${types}`);
  }
  const [bridge, ours] = list.plugins as [Record<string, unknown>, Record<string, unknown>];
  const env: CniEnv = { node, binDir: home.binDir, conflist };

  const r = {
    pods: names.length,
    addBridgeMs: [] as number[],
    addOursMs: [] as number[],
    addChainMs: [] as number[],
    addDaemonMeanMs: undefined as number | undefined,
  };
  const pods: CniPod[] = [];
  scope.defer(async () => {
    // Pods left at the end (a failed run) are removed the way a runtime would, while the node exists.
    for (const p of pods.filter((x) => x.result).reverse()) {
      await cniPlugin(pin, env, p, "DEL", ours, p.result).catch(() => {});
      await cniPlugin(pin, env, p, "DEL", bridge, p.result).catch(() => {});
    }
  });
  for (const name of names) {
    const pod: CniPod = { name, ns: await createNetns(scope, `${prefix}${name}`) };
    pods.push(pod);
    const b = await cniPlugin(pin, env, pod, "ADD", bridge);
    const o = await cniPlugin(pin, env, pod, "ADD", ours, JSON.parse(b.stdout));
    pod.result = JSON.parse(o.stdout);
    r.addBridgeMs.push(b.ms);
    r.addOursMs.push(o.ms);
    r.addChainMs.push(b.ms + o.ms);
  }
  {
    using m = new PinnedDatapathMaps(pinPath);
    const marks = m.maps.marks().size, local = m.maps.pods().size;
    if (marks !== names.length || local !== names.length) {
      throw new Error(`after ${names.length} ADDs: ${marks} marks, ${local} local pods`);
    }
  }
  for (const p of pods) {
    if (await markListeners(p.ns) !== 1) throw new Error(`pod ${p.name} has no mark listener after ADD`);
  }
  r.addDaemonMeanMs = await daemonAddMeanMs(daemon.p);

  const restartReadyMs: number[] = [];
  for (let i = 0; i < cfg.restarts; i++) {
    await stopDaemon(daemon.p);
    daemon = await timedDaemon(scope, pin, opts);
    restartReadyMs.push(daemon.ms);
    if (await markListeners(pods[0]!.ns) !== 1) {
      throw new Error("a restarted daemon did not reopen the listeners");
    }
  }

  const delOursMs: number[] = [], delBridgeMs: number[] = [];
  for (const p of [...pods].reverse()) {
    delOursMs.push((await cniPlugin(pin, env, p, "DEL", ours, p.result)).ms);
    delBridgeMs.push((await cniPlugin(pin, env, p, "DEL", bridge, p.result)).ms);
    p.result = undefined;
  }
  {
    using m = new PinnedDatapathMaps(pinPath);
    if (m.maps.marks().size || m.maps.pods().size) throw new Error("DEL left map entries behind");
  }
  await stopDaemon(daemon.p);
  res.cni = { ...r, delOursMs, delBridgeMs };
  return { firstReadyMs, restartReadyMs };
}

/** Pod i's IP in the daemon sections: 10.247.0.1 upwards, 250 to a /24. */
function benchPodIp(i: number): string {
  return `10.247.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

function podsText(n: number, changed?: string): string {
  let out = "";
  for (let i = 0; i < n; i++) {
    const ip = benchPodIp(i);
    const annotations: Record<string, string> = i === 0 && changed
      ? { "traffic.sidecar.istio.io/excludeOutboundPorts": changed }
      : {};
    out += podYaml(`mp${i}`, { ip, annotations });
  }
  return out;
}

/** Replaces the file in one rename, as kubectl or an editor would; the daemon never reads half a file. */
async function replaceFile(path: string, text: string) {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

async function waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
  return performance.now() - t0;
}

function sameBytes(a?: Uint8Array, b?: Uint8Array): boolean {
  if (!a || !b) return a === b;
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Changes pod mp0's annotation `changes` times; each time, how long until local_pods shows it. */
async function changeLatencies(m: PinnedDatapathMaps, podsFile: string, n: number, changes: number) {
  const ip = "10.247.0.1";
  const out: number[] = [];
  for (let i = 0; i < changes; i++) {
    const before = m.maps.podBytes(ip);
    await replaceFile(podsFile, podsText(n, String(9000 + (i % 2))));
    out.push(
      await waitFor(() => !sameBytes(m.maps.podBytes(ip), before), 10_000, "a pod change in the maps"),
    );
    // Apart from the debounce of the file watcher, so every change is seen on its own.
    await sleep(150);
  }
  return out;
}

async function daemonSection(
  scope: Scope,
  pin: Pinning,
  cfg: ControlConfig,
  res: ControlResults,
  dir: string,
  cni: { firstReadyMs: number; restartReadyMs: number[] },
) {
  const opts = await daemonHome(scope, { prefix: uniq(), name: "side", dir: `${dir}/side`, pods: "" });
  const { pinPath, podsFile } = opts;
  const d = await timedDaemon(scope, pin, opts);
  await sleep(cfg.settleMs);
  const idle = memoryKiB(d.p.pid);
  using m = new PinnedDatapathMaps(pinPath);
  const localPods = m.map("local_pods")!;
  const count = () => [...localPods.keys()].length;
  await replaceFile(podsFile, podsText(cfg.manyPods));
  const manySyncMs = await waitFor(
    () => count() === cfg.manyPods,
    30_000,
    `${cfg.manyPods} pods in the maps`,
  );
  await sleep(cfg.settleMs);
  const many = memoryKiB(d.p.pid);
  const changeManyMs = await changeLatencies(m, podsFile, cfg.manyPods, cfg.changes);
  const fewPods = 10;
  await replaceFile(podsFile, podsText(fewPods));
  await waitFor(() => count() === fewPods, 30_000, `${fewPods} pods in the maps`);
  await sleep(200);
  const changeFewMs = await changeLatencies(m, podsFile, fewPods, cfg.changes);
  // Memory differs between a daemon that verified the programs and one that reopened them (a restart
  // of the same build): both are measured, idle and with the pods.
  await replaceFile(podsFile, "");
  await waitFor(() => count() === 0, 30_000, "no pods in the maps");
  await stopDaemon(d.p);
  const again = await timedDaemon(scope, pin, opts);
  await sleep(cfg.settleMs);
  const idleRestart = memoryKiB(again.p.pid);
  await replaceFile(podsFile, podsText(cfg.manyPods));
  await waitFor(() => count() === cfg.manyPods, 30_000, `${cfg.manyPods} pods in the maps after a restart`);
  await sleep(cfg.settleMs);
  const manyRestart = memoryKiB(again.p.pid);
  await stopDaemon(again.p);
  res.daemon = {
    ...cni,
    sidecarRestartReadyMs: again.ms,
    rssIdleRestartKiB: idleRestart.rss,
    rssManyRestartKiB: manyRestart.rss,
    sidecarReadyMs: d.ms,
    rssIdleKiB: idle.rss,
    rssManyKiB: many.rss,
    hwmManyKiB: many.hwm,
    manyPods: cfg.manyPods,
    manySyncMs,
    changeManyMs,
    changeFewMs,
    fewPods,
  };
}

/** The daemon with no pods file: the service account's mount and KUBERNETES_SERVICE_* lead it to the API. */
async function inClusterSection(
  scope: Scope,
  pin: Pinning,
  cfg: ControlConfig,
  res: ControlResults,
  dir: string,
) {
  const home = await daemonHome(scope, { prefix: uniq(), name: "kube", dir: `${dir}/kube` });
  const { api, pki } = await startTlsApiServer(scope, home.dir, "bench");
  const sa = await serviceAccountMount(`${home.dir}/serviceaccount`, api, pki, "bench");
  const opts: DaemonProcOptions = {
    ...home,
    podsFile: undefined,
    env: sa.env,
    extra: [`--service-account-dir=${sa.dir}`],
  };
  const d = await timedDaemon(scope, pin, opts);
  if (!d.p.stderr.some((l) => l.includes("in-cluster service account"))) {
    throw new Error(`the daemon did not use the service account: ${d.p.stderr.join("\n")}`);
  }
  await sleep(cfg.settleMs);
  const idle = memoryKiB(d.p.pid);
  using m = new PinnedDatapathMaps(home.pinPath);
  const localPods = m.map("local_pods")!;
  const count = () => [...localPods.keys()].length;
  const t0 = performance.now();
  for (let i = 0; i < cfg.manyPods; i++) api.addPod(podDoc(`mp${i}`, { ip: benchPodIp(i) }));
  await waitFor(() => count() === cfg.manyPods, 30_000, `${cfg.manyPods} pods from the API in the maps`);
  const manySyncMs = performance.now() - t0;
  await sleep(cfg.settleMs);
  const many = memoryKiB(d.p.pid);
  const changeManyMs: number[] = [];
  for (let i = 0; i < cfg.changes; i++) {
    const before = m.maps.podBytes(benchPodIp(0));
    const t = performance.now();
    api.updatePod("default", "mp0", (p) => {
      p.metadata!.annotations = {
        ...p.metadata!.annotations,
        "traffic.sidecar.istio.io/excludeOutboundPorts": String(9000 + (i % 2)),
      };
    });
    await waitFor(
      () => !sameBytes(m.maps.podBytes(benchPodIp(0)), before),
      10_000,
      "a pod change from the API",
    );
    changeManyMs.push(performance.now() - t);
    // Apart from the source's 50 ms spacing of snapshots, so every change is seen on its own.
    await sleep(100);
  }
  for (let i = 0; i < cfg.manyPods; i++) api.deletePod("default", `mp${i}`);
  await waitFor(() => count() === 0, 30_000, "no pods in the maps");
  await stopDaemon(d.p);
  const again = await timedDaemon(scope, pin, opts);
  await sleep(cfg.settleMs);
  const idleRestart = memoryKiB(again.p.pid);
  await stopDaemon(again.p);
  res.inCluster = {
    readyMs: d.ms,
    restartReadyMs: again.ms,
    rssIdleKiB: idle.rss,
    rssIdleRestartKiB: idleRestart.rss,
    rssManyKiB: many.rss,
    manyPods: cfg.manyPods,
    manySyncMs,
    changeManyMs,
  };
}

/** A namespace with an interface holding `ip` (both veth ends inside it: no traffic is needed). */
async function addressedNetns(scope: Scope, name: string, ip: string): Promise<string> {
  const ns = await createNetns(scope, name);
  await inNs(ns, "ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
  await inNs(ns, "ip", ["addr", "add", `${ip}/24`, "dev", "eth0"]);
  return ns;
}

async function identitySection(
  scope: Scope,
  pin: Pinning,
  cfg: ControlConfig,
  res: ControlResults,
  dir: string,
) {
  const prefix = uniq();
  const k = (Deno.pid + 7) % 250;
  const ipOf = (i: number) => `10.245.${k}.${i + 1}`;
  const pods = Array.from({ length: cfg.identityPods }, (_, i) => podYaml(`ip${i}`, { ip: ipOf(i) })).join(
    "",
  );
  const home = await daemonHome(scope, { prefix, name: "id", dir: `${dir}/identity`, pods });
  const opts = { ...home, extra: ["--cni-mode=false", "--netns-dirs=/run/netns"] };
  const d = await timedDaemon(scope, pin, opts);
  using m = new PinnedDatapathMaps(opts.pinPath);
  const has = (ip: string) => [...m.maps.netnsPods().values()].includes(ip);
  const latencyMs: number[] = [];
  for (let i = 0; i < cfg.identityPods; i++) {
    const ns = await createNetns(scope, `${prefix}i${i}`);
    await inNs(ns, "ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    await inNs(ns, "ip", ["addr", "add", `${ipOf(i)}/24`, "dev", "eth0"]);
    latencyMs.push(await waitFor(() => has(ipOf(i)), 10_000, `pod ${i} identified`));
  }
  await stopDaemon(d.p);

  // The scan itself, in this process, with many namespaces of which the wanted ones are a part.
  const n = cfg.scanNamespaces;
  const scanIp = (i: number) => `10.244.${Math.floor(i / 250)}.${(i % 250) + 1}`;
  for (let i = 0; i < n; i++) await addressedNetns(scope, `${prefix}s${i}`, scanIp(i));
  const wanted = new Set(Array.from({ length: n }, (_, i) => scanIp(i)));
  const disc = new NetnsDiscovery({ netnsDirs: ["/run/netns"] });
  disc.scan(wanted);
  const cold = disc.lastStats;
  if (cold.read < n) throw new Error(`the first scan read ${cold.read} of ${n} namespaces`);
  const steadyScanMs: number[] = [];
  for (let i = 0; i < 50; i++) {
    disc.scan(wanted);
    if (disc.lastStats.read !== 0) throw new Error("a steady scan entered namespaces");
    steadyScanMs.push(disc.lastStats.ms);
  }
  // Every namespace unmatched and young: the worst case, each is entered again on every scan.
  const missingScanMs: number[] = [];
  const fresh = new NetnsDiscovery({ netnsDirs: ["/run/netns"] });
  for (let i = 0; i < 10; i++) {
    fresh.scan(new Set(["10.243.0.1"]));
    if (i > 0) missingScanMs.push(fresh.lastStats.ms);
  }
  res.identity = {
    pods: cfg.identityPods,
    latencyMs,
    namespaces: n,
    candidates: cold.candidates,
    coldScanMs: cold.ms,
    steadyScanMs,
    missingScanMs,
  };
}

/** Each part in its own scope: its namespaces, cgroups, pins and daemons are gone before the next. */
export async function runControl(
  pin: Pinning,
  cfg: ControlConfig,
  signal?: AbortSignal,
): Promise<ControlResults> {
  const res: ControlResults = { errors: [] };
  await using outer = new Scope();
  const dir = await Deno.makeTempDir({ prefix: "merbridge-bench-cp-" });
  outer.defer(() => Deno.remove(dir, { recursive: true }));
  let cni = { firstReadyMs: NaN, restartReadyMs: [] as number[] };
  try {
    await using scope = new Scope();
    cni = await cniSection(scope, pin, cfg, res, dir);
  } catch (e) {
    res.errors.push(`CNI: ${(e as Error).message}`);
  }
  try {
    signal?.throwIfAborted();
    await using scope = new Scope();
    await daemonSection(scope, pin, cfg, res, dir, cni);
  } catch (e) {
    res.errors.push(`daemon: ${(e as Error).message}`);
  }
  try {
    signal?.throwIfAborted();
    await using scope = new Scope();
    await inClusterSection(scope, pin, cfg, res, dir);
  } catch (e) {
    res.errors.push(`in-cluster daemon: ${(e as Error).message}`);
  }
  try {
    signal?.throwIfAborted();
    await using scope = new Scope();
    await identitySection(scope, pin, cfg, res, dir);
  } catch (e) {
    res.errors.push(`identity: ${(e as Error).message}`);
  }
  return res;
}
