// The demo's node, built the way a kubelet would see it: a "node" namespace whose real bridge +
// host-local CNI chain gives pods their network, the real `merbridge daemon` in CNI mode chaining its
// plugin into that conflist, pods ADDed through the chain, test sidecars standing in for Envoy, and a
// second "node" across a forwarding hop.
//
// Everything is registered on the scope in the order that makes its unwinding a clean node teardown:
// peers stop first, then every pod is DELeted through the chain, then the daemon gets SIGTERM and
// `merbridge uninstall` removes what it left pinned on purpose, and only then do the cgroup, the
// namespaces and the temp directory go. The same unwinding runs on success, failure and Ctrl-C.
import { PinnedDatapathMaps } from "../src/datapath/datapath.ts";
import { meshParams } from "../src/mesh/modes.ts";
import {
  bridgeConflist,
  cniAdd,
  cniDel,
  createNetns,
  daemonHome,
  invocation,
  listening,
  podYaml,
  type Proc,
  resultIp,
  runCli,
  type Scope,
  startDaemon,
  startNettool,
  startSidecar,
  stopDaemon,
  uniq,
  uplink,
} from "../testbed/mod.ts";
import { equal, holds, type Ledger } from "./ui.ts";

export const MESH = meshParams("istio");
export const APP_UID = 1000;
export const APP_PORT = 8080;
export const EXCLUDED_OUT_PORT = 9090;
export const EXCLUDED_IN_PORT = 8081;
export const BULK_BYTES = 1 << 20;

const POD_SUBNET = "10.244.1";
const UPLINK_SUBNET = "10.240.0";
const NETWORK = "demo";

export type PodKey = "a" | "b" | "plain";

export interface PodSpec {
  key: PodKey;
  name: string;
  meshed: boolean;
  annotations: Record<string, string>;
}

export const PODS: readonly PodSpec[] = [
  {
    key: "a",
    name: "pod-a",
    meshed: true,
    annotations: {
      "traffic.sidecar.istio.io/excludeOutboundPorts": String(EXCLUDED_OUT_PORT),
      "traffic.sidecar.istio.io/excludeInboundPorts": String(EXCLUDED_IN_PORT),
    },
  },
  { key: "b", name: "pod-b", meshed: true, annotations: {} },
  { key: "plain", name: "plain", meshed: false, annotations: {} },
];

export interface DemoPod extends PodSpec {
  ns: string;
  ip: string;
}

export interface DemoNode {
  prefix: string;
  dir: string;
  nodeNs: string;
  otherNs: string;
  nodeIp: string;
  otherIp: string;
  cgroup: string;
  pinPath: string;
  stateDir: string;
  runDir: string;
  conflist: string;
  daemon: Proc;
  pods: Record<PodKey, DemoPod>;
  sidecars: Record<"a" | "b", Proc>;
}

/** Runs the project's CLI from source, as an operator on the node would. */
export const cli = runCli;

/** IP addresses host-local still has leased (its data dir holds one file per address). */
function leases(dir: string): string[] {
  try {
    return [...Deno.readDirSync(`${dir}/ipam/${NETWORK}`)].map((e) => e.name)
      .filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n));
  } catch {
    return [];
  }
}

async function attempt(ui: Ledger, label: string, fn: () => Promise<void>) {
  try {
    await fn();
  } catch (e) {
    ui.fail(label, (e as Error).message);
  }
}

function pinCount(path: string): number {
  let n = 0;
  const walk = (p: string) => {
    for (const e of Deno.readDirSync(p)) {
      if (e.isDirectory) walk(`${p}/${e.name}`);
      else n++;
    }
  };
  try {
    walk(path);
  } catch { /* absent */ }
  return n;
}

/** What has been created so far, for the final residue check even when building stopped halfway. */
export interface Track {
  prefix?: string;
  dir?: string;
  pinPath?: string;
  daemonPid?: number;
}

export async function buildNode(
  scope: Scope,
  ui: Ledger,
  signal: AbortSignal,
  track: Track,
): Promise<DemoNode> {
  const prefix = track.prefix = uniq();
  // Every namespace exists before anything that lives in one, so the namespaces outlast all of it.
  const nodeNs = await createNetns(scope, `${prefix}n`);
  const otherNs = await createNetns(scope, `${prefix}o`);
  const podNs = {} as Record<PodKey, string>;
  for (const p of PODS) podNs[p.key] = await createNetns(scope, `${prefix}${p.key}`);
  const home = await daemonHome(scope, { prefix, name: "demo" });
  const { dir, cgroup, pinPath } = home;
  track.dir = dir;
  track.pinPath = pinPath;
  signal.throwIfAborted();

  // veth checksums are left partial while offload is on; off on the uplink, every hop computes them in
  // software, so the 1 MiB transfer below proves the rewritten packets' checksums are right.
  const { nodeIp, otherIp } = await uplink(nodeNs, otherNs, {
    net: UPLINK_SUBNET,
    pods: `${POD_SUBNET}.0/24`,
    nodeIf: "eth0",
    otherIf: "eth0",
  });

  const conflist = `${home.confDir}/10-${NETWORK}.conflist`;
  const originalConflist = bridgeConflist({
    name: NETWORK,
    subnet: `${POD_SUBNET}.0/24`,
    ipamDir: home.ipamDir,
  });
  await Deno.writeTextFile(conflist, originalConflist);
  const { podsFile } = home;
  await Deno.writeTextFile(
    podsFile,
    PODS.map((p) => podYaml(p.name, { meshed: p.meshed, annotations: p.annotations })).join(""),
  );
  signal.throwIfAborted();

  // Servers on the other node first: they are what pods talk to.
  for (const port of [APP_PORT, EXCLUDED_OUT_PORT]) {
    const s = startNettool(scope, { netns: otherNs }, ["server", "--name", "remote", "--port", String(port)]);
    await listening(s, [""], 5000, `other node :${port}`);
  }
  ui.check(`node ${nodeNs}: CNI chain bridge (cni0) + host-local ${POD_SUBNET}.0/24, uplink ${nodeIp}`, [], [
    `other node ${otherNs} at ${otherIp}, one forwarding hop away, servers on :${APP_PORT} and ` +
    `:${EXCLUDED_OUT_PORT}`,
  ]);

  const { stateDir, runDir } = home;
  const daemon = await startDaemon(scope, { ...home, extra: ["--cni-mode=true", "--sockmap=true"] });
  track.daemonPid = daemon.pid;
  const plugins = (JSON.parse(await Deno.readTextFile(conflist)).plugins as { type: string }[])
    .map((p) => p.type);
  const chained = ui.check(
    `merbridge daemon ready in CNI mode with the sockmap fast path (pid ${daemon.pid}), chained itself: ${
      plugins.join(" → ")
    }`,
    [equal("the conflist's chain", "bridge → merbridge-cni", plugins.join(" → "))],
    [`pins ${pinPath}, cgroup ${cgroup}, pods from ${podsFile.slice(dir.length + 1)}`],
  );
  if (!chained) throw new Error("the daemon did not chain its plugin");

  const uninstall = async () => {
    const un = await cli([
      "uninstall",
      `--bpf-pin-path=${pinPath}`,
      `--state-dir=${stateDir}`,
      `--run-dir=${runDir}`,
      `--cni-bin-dir=${home.binDir}`,
      `--cni-config-dir=${home.confDir}`,
      "--log-format=json",
    ]);
    const after = await Deno.readTextFile(conflist).catch((e) => `(${e.message})`);
    const plugin = await Deno.stat(`${home.binDir}/merbridge-cni`).then(() => true, () => false);
    ui.check(
      "merbridge uninstall",
      [
        equal("uninstall exit code", 0, un.code),
        equal("pins left", 0, pinCount(pinPath)),
        holds("the conflist", after === originalConflist, "byte for byte as before the daemon", after),
        equal("plugin in the CNI bin dir", false, plugin),
      ],
      un.stdout.trim().split("\n").filter(Boolean).concat(un.code ? [un.stderr.trim()] : []),
    );
  };
  let daemonExit: number | undefined;
  daemon.done.then((st) => daemonExit = st.code);
  // Unwinds after every pod's DEL (registered later, so run earlier) and before the namespaces go.
  scope.defer(async () => {
    if (daemonExit !== undefined) {
      // A Ctrl-C in the terminal reaches the daemon too, which then stops as on SIGTERM. DEL could not
      // reach it, so its entries stay until uninstall below removes them.
      ui.info(`the daemon had already stopped (exit ${daemonExit}): uninstall removes what DEL could not`);
      await attempt(ui, "merbridge uninstall", uninstall);
      return;
    }
    await attempt(ui, "state after DEL", async () => {
      using m = new PinnedDatapathMaps(pinPath);
      const state = await Deno.readTextFile(`${stateDir}/attachments.json`).then(
        (t) => JSON.stringify(JSON.parse(t)),
        (e) => `(${e.message})`,
      );
      ui.check("after DEL: no mark entry, no pod entry, no attachment left, every IP lease released", [
        equal("mark_pod_ips entries", 0, m.maps.marks().size),
        equal("local_pods entries", 0, m.maps.pods().size),
        equal("attachments.json", "[]", state),
        equal("host-local leases", "", leases(dir).join(", ")),
      ]);
    });
    await attempt(ui, "SIGTERM to the daemon", async () => {
      const code = await stopDaemon(daemon);
      const left = pinCount(pinPath);
      ui.check(
        `daemon stopped by SIGTERM (exit ${code}); it left ${left} pins for the next daemon, by design`,
        [
          equal("daemon exit code", 0, code),
          holds("pins after SIGTERM", left > 0, "the datapath still pinned", `${left} pins`),
        ],
      );
    });
    await attempt(ui, "merbridge uninstall", uninstall);
  });
  signal.throwIfAborted();

  const pods = {} as Record<PodKey, DemoPod>;
  for (const p of PODS) {
    const inv = invocation({ conflist, binDir: home.binDir, nodeNs }, {
      name: p.name,
      ns: podNs[p.key],
      containerId: `${prefix}-${p.name}`,
    });
    const added: { result?: Record<string, unknown> } = {};
    // Registered before ADD: a runtime DELs a pod whose ADD failed halfway, and so do we.
    scope.defer(async () => {
      try {
        const runs = await cniDel(inv, added.result);
        ui.check(`DEL ${p.name} through the chain (${runs.map((r) => r.type).join(", ")})`, []);
      } catch (e) {
        ui.fail(`DEL ${p.name}`, (e as Error).message);
      }
    });
    const { runs, result } = await cniAdd(inv);
    added.result = result;
    const ip = resultIp(result);
    pods[p.key] = { ...p, ns: podNs[p.key], ip };
    const ann = Object.entries(p.annotations).map(([k, v]) => `${k.split("/")[1]} "${v}"`).join(", ");
    ui.check(
      `ADD ${p.name.padEnd(5)} → ${ip}  ${p.meshed ? `meshed${ann ? `; ${ann}` : ""}` : "outside the mesh"}`,
      [equal("plugins run", "bridge → merbridge-cni", runs.map((r) => r.type).join(" → "))],
    );
    signal.throwIfAborted();
  }

  // After ADD, as a runtime starts containers once the network is up.
  const sidecars = {} as Record<"a" | "b", Proc>;
  for (const key of ["a", "b"] as const) {
    sidecars[key] = startSidecar(scope, { netns: podNs[key], cgroup, mesh: MESH });
  }
  const app = { netns: podNs.a, cgroup, uid: APP_UID };
  const appA = startNettool(scope, app, ["server", "--name", "pod-a", "--port", String(APP_PORT)]);
  const appA2 = startNettool(scope, app, ["server", "--name", "pod-a", "--port", String(EXCLUDED_IN_PORT)]);
  const bulkApp = startNettool(scope, { ...app, netns: podNs.b }, [
    "bulk-server",
    "--port",
    String(APP_PORT),
    "--bytes",
    String(BULK_BYTES),
  ]);
  for (const key of ["a", "b"] as const) {
    await listening(sidecars[key], ["outbound", "inbound"], 5000, `sidecar of ${key}`);
  }
  for (const p of [appA, appA2, bulkApp]) await listening(p, [""], 5000, "app server");
  ui.check(`sidecars up in pod-a and pod-b, apps listening`, [], [
    `sidecars run as uid ${MESH.proxyUid}, outbound :${MESH.outboundPort}, inbound :${MESH.inboundPort}; ` +
    `apps: pod-a :${APP_PORT} and :${EXCLUDED_IN_PORT} (echo), pod-b :${APP_PORT} (1 MiB answer)`,
  ]);

  return {
    prefix,
    dir,
    nodeNs,
    otherNs,
    nodeIp,
    otherIp,
    cgroup,
    pinPath,
    stateDir,
    runDir,
    conflist,
    daemon,
    pods,
    sidecars,
  };
}
