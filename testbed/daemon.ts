// Runs the real `merbridge daemon` (main.ts through deno) as a child process for tests.
import { PinnedDatapathMaps } from "../src/datapath/datapath.ts";
import { type Proc, ROOT, Scope, sleep, spawn } from "./mod.ts";

export interface DaemonProcOptions {
  cgroup: string;
  pinPath: string;
  /** Omitted: the daemon reads pods from the Kubernetes API (give --kubeconfig in extra). */
  podsFile?: string;
  stateDir: string;
  runDir: string;
  extra?: string[];
}

export function daemonArgs(o: DaemonProcOptions): string[] {
  return [
    "run",
    "-A",
    "--quiet",
    `${ROOT}main.ts`,
    "daemon",
    `--cgroup-path=${o.cgroup}`,
    `--bpf-pin-path=${o.pinPath}`,
    ...(o.podsFile ? [`--pods-file=${o.podsFile}`] : []),
    `--state-dir=${o.stateDir}`,
    `--run-dir=${o.runDir}`,
    "--node-name=test-node",
    "--metrics-addr=",
    "--log-format=json",
    // Never the machine's own CNI directories, even for a daemon not in CNI mode.
    `--cni-config-dir=${o.stateDir}/../cni-conf`,
    `--cni-bin-dir=${o.stateDir}/../cni-bin`,
    ...(o.extra ?? []),
  ];
}

/** Starts the daemon and waits for its "ready" log line. */
export async function startDaemon(scope: Scope, o: DaemonProcOptions): Promise<Proc> {
  const p = spawn(scope, Deno.execPath(), daemonArgs(o));
  const deadline = Date.now() + 20_000;
  while (!p.stderr.some((l) => l.includes('"msg":"ready"'))) {
    if (Date.now() > deadline) throw new Error(`daemon not ready: ${p.stderr.join("\n")}`);
    const st = await Promise.race([p.done, sleep(50).then(() => undefined)]);
    if (st) throw new Error(`daemon exited ${st.code}: ${p.stderr.join("\n")}`);
  }
  return p;
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
