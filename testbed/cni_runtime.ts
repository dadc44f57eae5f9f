// Drives a CNI chain the way a container runtime does (libcni semantics): each plugin of the conflist
// in order for ADD with the previous result, in reverse for DEL, with the CNI_* environment and the
// network config on stdin. Used to run bridge + host-local + merbridge-cni for real.

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

/** A conflist with the bridge plugin and host-local IPAM alone, as a node's primary CNI would leave it. */
export function bridgeConflist(o: { name: string; subnet: string; ipamDir: string }): string {
  return JSON.stringify(
    {
      cniVersion: "1.0.0",
      name: o.name,
      plugins: [{
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
      }],
    },
    null,
    2,
  ) + "\n";
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
  const p = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(conf)));
  await w.close();
  const out = await p.output();
  return {
    type,
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
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
