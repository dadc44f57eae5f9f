// The project's CLI run from source, as an operator on the node would run it.
import { PinnedDatapathMaps } from "../src/datapath/datapath.ts";
import { type Proc, run, type RunResult, sleep, spawn } from "./proc.ts";
import { ROOT } from "./root.ts";
import type { Scope } from "./scope.ts";

/** The argv that runs `merbridge <args>` from this checkout. */
export function cliArgv(args: string[]): string[] {
  return [Deno.execPath(), "run", "-A", "--quiet", `${ROOT}main.ts`, ...args];
}

/** Runs `merbridge <args>` to completion; a non-zero exit is the caller's to judge. */
export function runCli(args: string[]): Promise<RunResult> {
  const [cmd, ...rest] = cliArgv(args);
  return run(cmd!, rest, { allowFail: true });
}

/** Starts `merbridge <args>` as a process owned by `scope`. */
export function spawnCli(scope: Scope, args: string[], wrap: string[] = []): Proc {
  const argv = [...wrap, ...cliArgv(args)];
  return spawn(scope, argv[0]!, argv.slice(1));
}

/**
 * `merbridge monitor --output=json` on a pin directory, returned once it holds the lease (from then on
 * the programs send it events).
 */
export async function startMonitor(
  scope: Scope,
  o: { pinPath: string; runDir?: string; args?: string[]; timeoutMs?: number },
): Promise<Proc> {
  const p = spawnCli(scope, [
    "monitor",
    "--output=json",
    `--bpf-pin-path=${o.pinPath}`,
    `--run-dir=${o.runDir ?? "/nonexistent"}`,
    ...(o.args ?? []),
  ]);
  using m = new PinnedDatapathMaps(o.pinPath);
  const deadline = Date.now() + (o.timeoutMs ?? 15_000);
  while (!m.maps.monitorLeased()) {
    if (Date.now() > deadline) throw new Error(`the monitor never took the lease: ${p.stderr.join("\n")}`);
    await sleep(20);
  }
  return p;
}
