// The real `merbridge daemon` (main.ts through deno) as a child process: its home (directories, a child
// cgroup, a pin directory of its own), its arguments, and its start, which is over when its /readyz
// says so, as a kubelet's readiness probe would see it.
import { removePinTree } from "../src/bpf/pins.ts";
import { PinnedDatapathMaps } from "../src/datapath/datapath.ts";
import { DAEMON_V8_FLAGS } from "../src/daemon/runtime_flags.ts";
import { createCgroup } from "./netns.ts";
import { type Proc, sleep, spawn } from "./proc.ts";
import { ROOT } from "./root.ts";
import type { Scope } from "./scope.ts";

/** Where one daemon keeps everything: every path is ours, none is the machine's. */
export interface DaemonHome {
  dir: string;
  cgroup: string;
  pinPath: string;
  /** Not written until the caller writes it (or gives `pods`). */
  podsFile: string;
  stateDir: string;
  runDir: string;
  /** The CNI bin and configuration directories the daemon installs into. */
  binDir: string;
  confDir: string;
  /** host-local's data directory. */
  ipamDir: string;
}

export interface DaemonHomeOptions {
  /** The run's prefix (uniq()): the cgroup is `<prefix>-cg`, the pins `/sys/fs/bpf/<prefix>-<name>`. */
  prefix: string;
  name: string;
  /** An existing directory to live in; without it, a temp directory removed with the scope. */
  dir?: string;
  /** The pods file's content. */
  pods?: string;
}

export async function daemonHome(scope: Scope, o: DaemonHomeOptions): Promise<DaemonHome> {
  let dir = o.dir;
  if (dir === undefined) {
    const tmp = dir = await Deno.makeTempDir({ prefix: `merbridge-${o.name}-` });
    scope.defer(() => Deno.remove(tmp, { recursive: true }));
    // Test uids read files the peers are told to watch in here.
    await Deno.chmod(tmp, 0o755);
  }
  for (const d of ["bin", "net.d", "ipam", "run", "state"]) {
    await Deno.mkdir(`${dir}/${d}`, { recursive: true });
  }
  const cgroup = await createCgroup(scope, `${o.prefix}-cg`);
  const pinPath = `/sys/fs/bpf/${o.prefix}-${o.name}`;
  scope.defer(() => removePinTree(pinPath));
  const podsFile = `${dir}/pods.yaml`;
  if (o.pods !== undefined) await Deno.writeTextFile(podsFile, o.pods);
  return {
    dir,
    cgroup,
    pinPath,
    podsFile,
    stateDir: `${dir}/state`,
    runDir: `${dir}/run`,
    binDir: `${dir}/bin`,
    confDir: `${dir}/net.d`,
    ipamDir: `${dir}/ipam`,
  };
}

export interface DaemonProcOptions {
  cgroup: string;
  pinPath: string;
  /** Omitted: the daemon reads pods from the Kubernetes API (give --kubeconfig in extra). */
  podsFile?: string;
  stateDir: string;
  runDir: string;
  binDir?: string;
  confDir?: string;
  extra?: string[];
  /** Set in the daemon's environment besides ours (the in-cluster KUBERNETES_SERVICE_* for one). */
  env?: Record<string, string>;
}

/** The daemon's arguments, its HTTP endpoints on `metricsAddr` (none if empty). */
export function daemonArgs(o: DaemonProcOptions, metricsAddr = ""): string[] {
  return [
    "run",
    "-A",
    "--quiet",
    `--v8-flags=${DAEMON_V8_FLAGS}`,
    `${ROOT}main.ts`,
    "daemon",
    `--cgroup-path=${o.cgroup}`,
    `--bpf-pin-path=${o.pinPath}`,
    ...(o.podsFile ? [`--pods-file=${o.podsFile}`] : []),
    `--state-dir=${o.stateDir}`,
    `--run-dir=${o.runDir}`,
    "--node-name=test-node",
    `--metrics-addr=${metricsAddr}`,
    "--log-format=json",
    // Never the machine's own CNI directories, even for a daemon not in CNI mode.
    `--cni-config-dir=${o.confDir ?? `${o.stateDir}/../cni-conf`}`,
    `--cni-bin-dir=${o.binDir ?? `${o.stateDir}/../cni-bin`}`,
    ...(o.extra ?? []),
  ];
}

/** A daemon we started: the process, and where its /healthz, /readyz and /metrics are. */
export type Daemon = Proc & { readonly metricsAddr: string; readonly metricsUrl: string };

/** A loopback port nobody listens on now. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Starts the daemon without waiting for it, its HTTP endpoints on a free loopback port. `wrap` is a
 * command it runs under (e.g. `taskset -c 1`, or `env VAR=x`).
 */
export function spawnDaemon(scope: Scope, o: DaemonProcOptions, wrap: string[] = []): Daemon {
  const addr = `127.0.0.1:${freePort()}`;
  const env = Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const argv = [...wrap, ...(env.length ? ["env", ...env] : []), Deno.execPath(), ...daemonArgs(o, addr)];
  const p = spawn(scope, argv[0]!, argv.slice(1));
  return Object.assign(p, { metricsAddr: addr, metricsUrl: `http://${addr}` });
}

/** Waits until the daemon's /readyz answers 200; throws if it exits first or takes too long. */
export async function waitReady(
  d: Daemon,
  o: { timeoutMs?: number; pollMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (o.timeoutMs ?? 20_000);
  let exited: Deno.CommandStatus | undefined;
  d.done.then((st) => exited = st);
  let last = "no answer";
  // A client of its own, closed at the end: no kept-alive connection outlives the wait.
  using client = Deno.createHttpClient({});
  for (;;) {
    if (exited) throw new Error(`daemon exited ${exited.code}: ${d.stderr.slice(-5).join("\n")}`);
    try {
      const res = await fetch(`${d.metricsUrl}/readyz`, { client, signal: AbortSignal.timeout(2000) });
      const text = (await res.text()).trim();
      if (res.status === 200) return;
      last = `${res.status} ${text}`;
    } catch (e) {
      // Not listening yet: the endpoints open once the programs are loaded.
      last = (e as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`daemon not ready (${last}): ${d.stderr.join("\n")}`);
    await sleep(o.pollMs ?? 25);
  }
}

/** Starts the daemon and waits for /readyz. */
export async function startDaemon(scope: Scope, o: DaemonProcOptions): Promise<Daemon> {
  const d = spawnDaemon(scope, o);
  await waitReady(d);
  return d;
}

/** SIGTERM and wait; returns the exit code. */
export async function stopDaemon(p: Proc): Promise<number> {
  p.kill("SIGTERM");
  return (await p.done).code;
}

/** Polls the pinned maps until `pred` holds. */
export async function waitMaps(pinPath: string, pred: (m: PinnedDatapathMaps) => boolean, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    {
      using m = new PinnedDatapathMaps(pinPath);
      if (pred(m)) return Date.now() - (deadline - timeoutMs);
    }
    if (Date.now() > deadline) throw new Error("maps did not reach the expected state in time");
    await sleep(25);
  }
}
