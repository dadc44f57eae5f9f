// Drives a CNI chain the way a container runtime does (libcni semantics): each plugin of the conflist
// in order for ADD with the previous result, in reverse for DEL, with the CNI_* environment and the
// network config on stdin. Used to run bridge + host-local + merbridge-cni for real, on a node built
// of namespaces (cniNode) whose pods a PodRuntime adds and deletes.
import { type DaemonHome, daemonHome } from "./daemon.ts";
import { createNetns, uniq, uplink } from "./netns.ts";
import { run } from "./proc.ts";
import type { Scope } from "./scope.ts";

/** Where Debian's containernetworking-plugins puts bridge, host-local and the others. */
export const PLUGINS = "/usr/lib/cni";

export interface CniInvocation {
  conflist: string;
  binDirs: string[];
  netns: string;
  containerId: string;
  ifName?: string;
  podNamespace: string;
  podName: string;
  /** Run the plugins inside this network namespace (the bridge is created where the plugin runs). */
  runInNetns?: string;
  /** A command the plugin runs under, e.g. `taskset -c 1` in the benchmark. */
  wrap?: string[];
}

/** The bridge plugin with host-local IPAM, as a node's primary CNI configures it. */
export function bridgePlugin(o: { subnet: string; ipamDir: string }): Record<string, unknown> {
  return {
    type: "bridge",
    bridge: "cni0",
    isGateway: true,
    ipMasq: false,
    ipam: {
      type: "host-local",
      subnet: o.subnet,
      dataDir: o.ipamDir,
      routes: [{ dst: "0.0.0.0/0" }],
    },
  };
}

/** A conflist with the bridge plugin and host-local IPAM alone, as a node's primary CNI would leave it. */
export function bridgeConflist(o: { name: string; subnet: string; ipamDir: string }): string {
  return JSON.stringify({ cniVersion: "1.0.0", name: o.name, plugins: [bridgePlugin(o)] }, null, 2) + "\n";
}

export interface PluginRun {
  type: string;
  code: number;
  stdout: string;
  stderr: string;
}

async function exec(inv: CniInvocation, command: string, type: string, conf: unknown): Promise<PluginRun> {
  const env: Record<string, string> = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: inv.containerId,
    CNI_NETNS: inv.netns,
    CNI_IFNAME: inv.ifName ?? "eth0",
    CNI_PATH: inv.binDirs.join(":"),
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${inv.podNamespace};K8S_POD_NAME=${inv.podName}`,
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
  };
  const home = Deno.env.get("HOME");
  if (home) env.HOME = home;
  const dir = inv.binDirs.find((d) => {
    try {
      return Deno.statSync(`${d}/${type}`).isFile;
    } catch {
      return false;
    }
  });
  if (!dir) throw new Error(`plugin ${type} not found in ${inv.binDirs.join(":")}`);
  const plugin = [...(inv.wrap ?? []), `${dir}/${type}`];
  const argv = inv.runInNetns ? ["nsenter", `--net=/run/netns/${inv.runInNetns}`, "--", ...plugin] : plugin;
  const r = await run(argv[0]!, argv.slice(1), {
    env,
    clearEnv: true,
    stdin: JSON.stringify(conf),
    allowFail: true,
  });
  return { type, ...r };
}

function pluginsOf(
  conflist: string,
): { cniVersion: string; name: string; plugins: Record<string, unknown>[] } {
  return JSON.parse(Deno.readTextFileSync(conflist));
}

/** ADD through the whole chain; returns every plugin's run and the final result. */
export async function cniAdd(
  inv: CniInvocation,
): Promise<{ runs: PluginRun[]; result: Record<string, unknown> }> {
  const list = pluginsOf(inv.conflist);
  let prev: unknown;
  const runs: PluginRun[] = [];
  for (const p of list.plugins) {
    const conf = {
      ...p,
      cniVersion: list.cniVersion,
      name: list.name,
      ...(prev ? { prevResult: prev } : {}),
    };
    const r = await exec(inv, "ADD", String(p.type), conf);
    runs.push(r);
    if (r.code !== 0) throw new Error(`ADD ${p.type} failed (${r.code}): ${r.stdout} ${r.stderr}`);
    prev = JSON.parse(r.stdout);
  }
  return { runs, result: prev as Record<string, unknown> };
}

/** DEL through the chain in reverse, as runtimes do; `prevResult` is the cached ADD result. */
export async function cniDel(inv: CniInvocation, prevResult?: unknown): Promise<PluginRun[]> {
  const list = pluginsOf(inv.conflist);
  const runs: PluginRun[] = [];
  for (const p of [...list.plugins].reverse()) {
    const conf = {
      ...p,
      cniVersion: list.cniVersion,
      name: list.name,
      ...(prevResult ? { prevResult } : {}),
    };
    const r = await exec(inv, "DEL", String(p.type), conf);
    runs.push(r);
    if (r.code !== 0) throw new Error(`DEL ${p.type} failed (${r.code}): ${r.stdout} ${r.stderr}`);
  }
  return runs;
}

/** One plugin alone, for error-case tests. */
export function cniExec(
  inv: CniInvocation,
  command: string,
  type: string,
  conf: unknown,
): Promise<PluginRun> {
  return exec(inv, command, type, conf);
}

/** The pod's IPv4 address from a chain's ADD result. */
export function resultIp(result: Record<string, unknown>): string {
  return String((result.ips as { address: string }[])[0]!.address).split("/")[0]!;
}

export interface ChainOptions {
  conflist: string;
  /** The daemon's CNI bin directory (where it installs merbridge-cni), searched before PLUGINS. */
  binDir: string;
  /** The node namespace the plugins run in (the bridge is created there). */
  nodeNs: string;
  /** A command each plugin runs under. */
  wrap?: string[];
}

/** One pod's invocation of a chain. */
export function invocation(
  c: ChainOptions,
  pod: { name: string; ns: string; containerId: string },
): CniInvocation {
  return {
    conflist: c.conflist,
    binDirs: [c.binDir, PLUGINS],
    netns: `/run/netns/${pod.ns}`,
    containerId: pod.containerId,
    podNamespace: "default",
    podName: pod.name,
    runInNetns: c.nodeNs,
    ...(c.wrap ? { wrap: c.wrap } : {}),
  };
}

export interface RuntimePod {
  name: string;
  ns: string;
  ip: string;
  containerId: string;
  conflist: string;
  result: Record<string, unknown>;
}

/**
 * What the container runtime does with pods: a namespace each, ADD through the chain, DEL with the cached
 * result. Pods still there when the scope ends are DELeted (newest first) before their namespaces go, so
 * create the runtime after anything that must still exist at DEL time (the daemon).
 */
export class PodRuntime {
  readonly pods = new Map<string, RuntimePod>();

  constructor(readonly scope: Scope, readonly chain: ChainOptions, readonly prefix: string) {
    scope.defer(async () => {
      for (const name of [...this.pods.keys()].reverse()) await this.delPod(name).catch(() => {});
    });
  }

  inv(name: string, ns: string, conflist = this.chain.conflist): CniInvocation {
    return invocation({ ...this.chain, conflist }, { name, ns, containerId: `ctr-${this.prefix}-${name}` });
  }

  /** A namespace `<prefix><name>` and an ADD into it (through `conflist`, default the chain's). */
  async addPod(name: string, conflist = this.chain.conflist): Promise<RuntimePod> {
    const ns = await createNetns(this.scope, `${this.prefix}${name}`);
    const inv = this.inv(name, ns, conflist);
    const { result } = await cniAdd(inv);
    const pod = { name, ns, ip: resultIp(result), containerId: inv.containerId, conflist, result };
    this.pods.set(name, pod);
    return pod;
  }

  async delPod(name: string): Promise<PluginRun[]> {
    const p = this.pods.get(name)!;
    this.pods.delete(name);
    return await cniDel(this.inv(name, p.ns, p.conflist), p.result);
  }

  pod(name: string): RuntimePod {
    return this.pods.get(name)!;
  }
}

export interface CniNodeOptions {
  /** The network's name: the conflist is net.d/10-<network>.conflist. */
  network: string;
  /** The daemon home's name (its pins and temp directory). */
  name: string;
  /** Added to the subnet number, so two nodes of one run get different subnets. */
  salt?: number;
  /** First two octets of the pod subnet and of the uplink (default 10.250 and 10.251). */
  podNet?: string;
  uplinkNet?: string;
  /** The other side of the uplink: the client namespace's suffix and interface names. */
  other?: { suffix: string; nodeIf: string; otherIf: string };
}

export interface CniNode {
  prefix: string;
  /** The third octet of the node's subnets. */
  k: number;
  home: DaemonHome;
  /** The node's namespace: the bridge (cni0) the chain creates lives here. */
  node: string;
  /** A namespace one forwarding hop from the node ("another node"), routed to the pods. */
  client: string;
  podSubnet: string;
  clientIp: string;
  /** The node's conflist: bridge + host-local alone, until a daemon in CNI mode chains itself in. */
  conflist: string;
  chain: ChainOptions;
}

/**
 * A node as a kubelet sees it: a namespace where the bridge + host-local chain puts pods, another node
 * one hop away (offload off on the link, so checksums are verified after forwarding), and a daemon home
 * whose conflist has not met the daemon yet.
 */
export async function cniNode(scope: Scope, o: CniNodeOptions): Promise<CniNode> {
  const prefix = uniq();
  const k = (Deno.pid + Number.parseInt(prefix.slice(-2), 36) + (o.salt ?? 0)) % 250;
  const other = o.other ?? { suffix: "c", nodeIf: "n0", otherIf: "c0" };
  const home = await daemonHome(scope, { prefix, name: o.name });
  const node = await createNetns(scope, `${prefix}n`);
  const client = await createNetns(scope, `${prefix}${other.suffix}`);
  const podSubnet = `${o.podNet ?? "10.250"}.${k}.0/24`;
  const link = await uplink(node, client, {
    net: `${o.uplinkNet ?? "10.251"}.${k}`,
    pods: podSubnet,
    nodeIf: other.nodeIf,
    otherIf: other.otherIf,
  });
  const conflist = `${home.confDir}/10-${o.network}.conflist`;
  await Deno.writeTextFile(
    conflist,
    bridgeConflist({ name: o.network, subnet: podSubnet, ipamDir: home.ipamDir }),
  );
  return {
    prefix,
    k,
    home,
    node,
    client,
    podSubnet,
    clientIp: link.otherIp,
    conflist,
    chain: { conflist, binDir: home.binDir, nodeNs: node },
  };
}
