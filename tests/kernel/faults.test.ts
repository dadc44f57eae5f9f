// Crash consistency by fault injection: the daemon is SIGKILLed at random points while pods are added
// and deleted in parallel through the real chain (bridge + host-local + merbridge-cni), while it
// installs itself into the CNI configuration (wrapping a lone .conf), and `uninstall-cni` is killed
// while it takes the entry out. After every restart: each running pod is attached and identified,
// each deleted pod left nothing, and the configuration directory holds exactly one valid chain.
// The seed is printed (and taken from MERBRIDGE_FAULT_SEED) so that a failing sequence can be replayed.
import assert from "node:assert/strict";
import { PinnedDatapathMaps } from "../../src/datapath/datapath.ts";
import { validateRecords } from "../../src/daemon/state_store.ts";
import {
  bridgePlugin,
  cniAdd,
  cniDel,
  type CniInvocation,
  createNetns,
  daemonHome,
  inNs,
  invocation,
  podYaml,
  type Proc,
  resultIp,
  run,
  Scope,
  sleep,
  spawnCli,
  spawnDaemon,
  startDaemon,
  uniq,
  waitReady,
} from "../../testbed/mod.ts";

const PODS = 12;
const ADD_DEL_KILLS = 14;
const INSTALL_KILLS = 4;
const UNINSTALL_KILLS = 4;

/** mulberry32: small, seedable, good enough to pick delays and operations. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface RunningPod {
  name: string;
  ns: string;
  ip: string;
  containerId: string;
  result: Record<string, unknown>;
}

Deno.test("kernel: SIGKILL at random points during parallel ADD/DEL, install and uninstall leaves every pod right", async () => {
  const seed = Number(Deno.env.get("MERBRIDGE_FAULT_SEED") ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  console.log(`fault injection seed ${seed} (MERBRIDGE_FAULT_SEED=${seed} replays it)`);
  const started = Date.now();
  await using scope = new Scope();
  const prefix = uniq();
  const k = (Deno.pid + Number.parseInt(prefix.slice(-2), 36)) % 250;
  const names = Array.from({ length: PODS }, (_, i) => `f${i}`);
  const home = await daemonHome(scope, {
    prefix,
    name: "faults",
    pods: names.map((n) => podYaml(n)).join(""),
  });
  const { dir, confDir, pinPath } = home;
  const node = await createNetns(scope, `${prefix}n`);
  // A lone .conf, so that every install wraps it into a .conflist and every uninstall unwraps it.
  await Deno.writeTextFile(
    `${confDir}/10-testnet.conf`,
    JSON.stringify({
      cniVersion: "1.0.0",
      name: "testnet",
      ...bridgePlugin({ subnet: `10.249.${k}.0/24`, ipamDir: home.ipamDir }),
    }) + "\n",
  );
  const conflist = `${confDir}/10-testnet.conflist`;
  const daemonOpts = { ...home, extra: ["--cni-mode=true", "--netns-dirs=/run/netns"] };
  let daemon: Proc = await startDaemon(scope, daemonOpts);

  const running = new Map<string, RunningPod>();
  const namespaces = new Set<string>();
  scope.defer(async () => {
    for (const p of running.values()) {
      await cniDel(inv(p.name, p.ns, p.containerId), p.result).catch(() => {});
    }
    for (const ns of namespaces) await run("ip", ["netns", "del", ns], { allowFail: true });
  });
  let gen = 0;
  const inv = (name: string, ns: string, containerId: string): CniInvocation =>
    invocation({ conflist, binDir: home.binDir, nodeNs: node }, { name, ns, containerId });
  const dropNetns = async (ns: string) => {
    await run("ip", ["netns", "del", ns], { allowFail: true });
    namespaces.delete(ns);
  };

  /** ADD as a runtime does it: a failed ADD is torn down (DEL, namespace removed) before any retry. */
  const add = async (name: string): Promise<string> => {
    const g = gen++;
    const ns = `${prefix}${name}g${g}`;
    await run("ip", ["netns", "add", ns]);
    namespaces.add(ns);
    await inNs(ns, "ip", ["link", "set", "lo", "up"]);
    const containerId = `ctr-${prefix}-${name}-${g}`;
    const i = inv(name, ns, containerId);
    try {
      const { result } = await cniAdd(i);
      const ip = resultIp(result);
      running.set(name, { name, ns, ip, containerId, result });
      return `+${name}`;
    } catch {
      await cniDel(i).catch(() => {});
      await dropNetns(ns);
      return `+${name}!`;
    }
  };
  const del = async (name: string): Promise<string> => {
    const p = running.get(name)!;
    running.delete(name);
    await cniDel(inv(p.name, p.ns, p.containerId), p.result);
    await dropNetns(p.ns);
    return `-${name}`;
  };

  const kill = async () => {
    daemon.kill("SIGKILL");
    await daemon.done;
  };
  const restart = async () => {
    daemon = await startDaemon(scope, daemonOpts);
  };

  const confFiles = () => [...Deno.readDirSync(confDir)].map((e) => e.name).sort();
  /** What a runtime would consider (hidden staging files are not). */
  const visible = () => confFiles().filter((n) => !n.startsWith("."));

  /** The invariants, checked against the pinned maps, the namespaces, the state file and the conf dir. */
  const verify = async (what: string) => {
    const files = confFiles();
    assert.deepEqual(files, ["10-testnet.conflist"], `${what}: one chain in ${confDir}, got ${files}`);
    const list = JSON.parse(await Deno.readTextFile(conflist));
    assert.deepEqual(list.plugins.map((p: { type: string }) => p.type), ["bridge", "merbridge-cni"], what);
    const ips = new Set([...running.values()].map((p) => p.ip));
    {
      using m = new PinnedDatapathMaps(pinPath);
      const marks = [...m.maps.marks().values()].sort();
      assert.deepEqual(
        marks,
        [...ips].sort(),
        `${what}: one mark entry per running pod, none for deleted ones`,
      );
      assert.deepEqual([...m.maps.pods().keys()].sort(), [...ips].sort(), `${what}: local_pods`);
      const identified = [...m.maps.netnsPods().values()].sort();
      assert.deepEqual(identified, [...ips].sort(), `${what}: every running pod identified by its namespace`);
    }
    let pins: string[] = [];
    try {
      pins = [...Deno.readDirSync(`${pinPath}/pods`)].map((e) => e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    assert.deepEqual(
      pins.map((p) => p.slice(p.lastIndexOf("@") + 1).replaceAll("_", ".")).sort(),
      [...ips].sort(),
      `${what}: one pin directory per running pod: ${pins}`,
    );
    const recs = validateRecords(JSON.parse(await Deno.readTextFile(`${dir}/state/attachments.json`)));
    assert.deepEqual(
      recs.map((r) => r.containerId).sort(),
      [...running.values()].map((p) => p.containerId).sort(),
      `${what}: the state file names exactly the running pods`,
    );
    for (const p of running.values()) {
      const ss = (await inNs(p.ns, "ss", ["-Htln", "sport = :39807"])).stdout.trim().split("\n").filter(
        Boolean,
      );
      assert.equal(ss.length, 1, `${what}: ${p.name} has its mark listener`);
      const link = (await inNs(p.ns, "ip", ["-d", "link", "show", "eth0"])).stdout;
      assert.match(link, /xdp/, `${what}: ${p.name} has its XDP program`);
      const tx = (await inNs(p.ns, "ethtool", ["-k", "eth0"])).stdout;
      assert.match(tx, /tx-checksumming: off/, `${what}: ${p.name}'s offload is off while XDP rewrites`);
    }
  };

  await verify("start");
  const tried: string[] = [];

  /** A daemon that kills itself at `spec`, started and ready. */
  const startArmed = async (spec: string) => {
    const p = spawnDaemon(scope, daemonOpts, ["env", `MERBRIDGE_CRASH_AT=${spec}`]);
    await waitReady(p).catch((e) => {
      throw new Error(`armed daemon (${spec}) did not start: ${(e as Error).message}`);
    });
    return p;
  };
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;

  for (let round = 0; round < ADD_DEL_KILLS; round++) {
    const ops = names.filter(() => rand() < 0.6).map((n) => running.has(n) ? () => del(n) : () => add(n));
    const adds = ops.length;
    let how: string;
    if (round % 2 === 0) {
      // A named point of the attach/detach path, reached by the n-th request of the batch.
      const point = pick([
        "attach:recorded",
        "attach:listener-open",
        "attach:before-ingress",
        "attach:applied",
        "detach:forgotten",
        "state:temp-written",
      ]);
      // Restore passes the listener and ingress points once per running pod, and saves once.
      const base = point.startsWith("attach:l") || point.startsWith("attach:b")
        ? running.size
        : point === "state:temp-written"
        ? 1
        : 0;
      const spec = `${point}:${base + 1 + Math.floor(rand() * Math.max(1, adds / 2))}`;
      await kill();
      daemon = await startArmed(spec);
      const done = await Promise.all(ops.map((op) => op()));
      const st = await Promise.race([daemon.done, sleep(200).then(() => undefined)]);
      how = st ? `killed itself at ${spec}` : `${spec} not reached, killed after the batch`;
      await kill();
      tried.push(`ADD/DEL ${how}: ${done.join(" ")}`);
    } else {
      const delay = Math.floor(rand() * 1200);
      const batch = Promise.all(ops.map((op) => op()));
      await sleep(delay);
      await kill();
      const done = await batch;
      tried.push(`ADD/DEL kill after ${delay} ms: ${done.join(" ")}`);
    }
    await restart();
    await verify(`round ${round} (${tried.at(-1)})`);
  }

  const cli = (args: string[], spec?: string) =>
    spawnCli(scope, [...args, "--log-format=json"], spec ? ["env", `MERBRIDGE_CRASH_AT=${spec}`] : []);
  const cniFlags = [`--cni-bin-dir=${dir}/bin`, `--cni-config-dir=${confDir}`, `--state-dir=${dir}/state`];

  for (let round = 0; round < INSTALL_KILLS; round++) {
    await kill();
    const un = cli(["uninstall-cni", ...cniFlags]);
    assert.equal((await un.done).code, 0, un.stderr.join("\n"));
    assert.deepEqual(confFiles(), ["10-testnet.conf"], "uninstall-cni put the .conf back");
    let how: string;
    if (round % 2 === 0) {
      const spec = pick(["cni-install:state-written", "cni-install:conf-aside"]);
      const d = spawnDaemon(scope, daemonOpts, ["env", `MERBRIDGE_CRASH_AT=${spec}`]);
      const st = await Promise.race([d.done, sleep(15_000).then(() => undefined)]);
      d.kill("SIGKILL");
      await d.done;
      how = st ? `killed itself at ${spec}` : `${spec} not reached in 15 s`;
    } else {
      const delay = 50 + Math.floor(rand() * 900);
      const d = spawnDaemon(scope, daemonOpts);
      await sleep(delay);
      d.kill("SIGKILL");
      await d.done;
      how = `kill after ${delay} ms`;
    }
    tried.push(`install ${how}: conf dir then held ${visible().join(", ") || "nothing"}`);
    assert.ok(visible().length <= 1, `never a .conf beside the list: ${confFiles()}`);
    await restart();
    await verify(`install round ${round} (${tried.at(-1)})`);
  }

  for (let round = 0; round < UNINSTALL_KILLS; round++) {
    await kill();
    let how: string;
    if (round % 2 === 0) {
      const spec = pick(["cni-uninstall:list-removed", "cni-uninstall:conf-reverted"]);
      const un = cli(["uninstall-cni", ...cniFlags], spec);
      const st = await un.done;
      how = st.signal === "SIGKILL" ? `killed itself at ${spec}` : `${spec} not reached`;
    } else {
      const delay = 30 + Math.floor(rand() * 400);
      const un = cli(["uninstall-cni", ...cniFlags]);
      await sleep(delay);
      un.kill("SIGKILL");
      await un.done;
      how = `kill after ${delay} ms`;
    }
    tried.push(`uninstall-cni ${how}: conf dir then held ${visible().join(", ") || "nothing"}`);
    assert.ok(visible().length <= 1, `never a .conf beside the list: ${confFiles()}`);
    await restart();
    await verify(`uninstall round ${round} (${tried.at(-1)})`);
  }

  for (const line of tried) console.log(line);
  const kills = ADD_DEL_KILLS + INSTALL_KILLS + UNINSTALL_KILLS;
  console.log(`${kills} kills, ${gen} ADDs tried, every invariant held, ${Date.now() - started} ms`);
  for (const name of [...running.keys()]) await del(name);
  await verify("all deleted");
});
