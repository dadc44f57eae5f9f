// Starting the benchmark's processes: every one pinned to the measurement CPU, in a namespace, a
// cgroup and as a uid (the testbed's spawn does the last three and keeps the PID the process's own).
import { type Proc, Scope, spawn, type SpawnOptions } from "../testbed/mod.ts";

export interface Pinning {
  /** The CPU every measured process runs on. */
  cpu: number;
}

/** The command that runs another on the measurement CPU. */
export function pinPrefix(p: Pinning): string[] {
  return ["taskset", "-c", String(p.cpu)];
}

/** A long-running peer (server, proxy) owned by `scope`. */
export function startPinned(
  scope: Scope,
  p: Pinning,
  cmd: string,
  args: string[],
  opts: SpawnOptions,
): Proc {
  const [taskset, ...rest] = pinPrefix(p);
  return spawn(scope, taskset!, [...rest, cmd, ...args], opts);
}

export class ToolError extends Error {
  constructor(message: string, readonly output?: Record<string, unknown>) {
    super(message);
    this.name = "ToolError";
  }
}

/**
 * Runs a client to completion and returns its last JSON line. A client that hangs (a path that
 * stopped carrying data) is killed after `timeoutMs` and reported as a failure.
 */
export async function runPinned(
  p: Pinning,
  cmd: string,
  args: string[],
  opts: SpawnOptions,
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  await using scope = new Scope();
  const proc = startPinned(scope, p, cmd, args, opts);
  if (!(await proc.finish(timeoutMs))) {
    throw new ToolError(`${args[0]} timed out after ${timeoutMs} ms: ${proc.stderr.join(" ")}`);
  }
  const last = proc.lines.at(-1);
  if (!last) throw new ToolError(`${args[0]} printed nothing: ${proc.stderr.join(" ")}`);
  return last;
}

export interface ProxyStats {
  accepted: number;
  origdst_errors: number;
  upstream_errors: number;
  loops: number;
}

/** Asks a fastproxy for its counters (SIGUSR1 makes it print them). */
export async function proxyStats(proxy: Proc): Promise<ProxyStats> {
  const from = proxy.lines.length;
  Deno.kill(proxy.pid, "SIGUSR1");
  const l = await proxy.waitFor((x) => x.event === "stats", 5000, `stats from pid ${proxy.pid}`, from);
  return {
    accepted: Number(l.accepted),
    origdst_errors: Number(l.origdst_errors),
    upstream_errors: Number(l.upstream_errors),
    loops: Number(l.loops),
  };
}

/** Resident and peak memory of a process, from /proc, in KiB. */
export function memoryKiB(pid: number): { rss: number; hwm: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status);
    return m ? Number(m[1]) : NaN;
  };
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

/** Fails unless the process may run on exactly the measurement CPU (taskset did its job). */
export function assertPinned(pid: number, p: Pinning): void {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const allowed = /^Cpus_allowed_list:\s+(\S+)$/m.exec(status)?.[1];
  if (allowed !== String(p.cpu)) throw new Error(`pid ${pid} may run on CPUs ${allowed}, not only ${p.cpu}`);
}
