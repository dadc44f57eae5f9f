// Builds throwaway "nodes" and "pods" out of network namespaces, veths and a child cgroup, and tears
// all of it down in reverse order when the scope ends, whether the test passed or threw.
// Rules it enforces: nothing is attached to the root cgroup or the machine's own interfaces; processes
// are killed by the PIDs we started; every name carries a per-run prefix.
import { cgroup2Root } from "../src/cgroup/cgroup2.ts";

export const ROOT = new URL("../", import.meta.url).pathname;
/**
 * The test peers' script, copied where unprivileged test uids can read it (the checkout may live
 * under a home directory they cannot enter).
 */
export const NETTOOL: string = (() => {
  const dir = Deno.makeTempDirSync({ prefix: `merbridge-nettool-${Deno.pid}-` });
  Deno.chmodSync(dir, 0o755);
  const path = `${dir}/nettool.py`;
  Deno.copyFileSync(`${ROOT}testbed/nettool.py`, path);
  Deno.chmodSync(path, 0o755);
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  return path;
})();
/** The distribution's python: unprivileged test uids cannot reach a per-user install under /root. */
export const PYTHON = "/usr/bin/python3";

let seq = 0;
const PID36 = Deno.pid.toString(36).padStart(5, "0");
/**
 * A short unique prefix (interface names are limited to 15 bytes). It embeds our PID, so that
 * sweepStale() can tell the leftovers of a crashed run (PID gone) from resources of runs still going.
 */
export function uniq(): string {
  seq++;
  return `mb${PID36}${seq.toString(36)}`;
}

const STALE = /^mb([0-9a-z]{5})/;

function ownerAlive(name: string): boolean {
  const m = STALE.exec(name);
  if (!m) return true; // not ours: never touch
  const pid = parseInt(m[1]!, 36);
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes namespaces, pin directories and cgroups left by test runs that died before their cleanup
 * ran (an uncaught error ends the runner without unwinding). Only names with our prefix whose
 * creating process no longer exists are touched.
 */
export function sweepStale(): string[] {
  const removed: string[] = [];
  const netns = new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped", stderr: "null" })
    .outputSync();
  for (const line of new TextDecoder().decode(netns.stdout).split("\n")) {
    const name = line.split(" ")[0] ?? "";
    if (STALE.test(name) && !ownerAlive(name)) {
      // Processes still inside a dead run's namespace were started by that run.
      const pids = new Deno.Command("ip", { args: ["netns", "pids", name], stdout: "piped", stderr: "null" })
        .outputSync();
      for (const pid of new TextDecoder().decode(pids.stdout).split("\n").filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch { /* gone */ }
      }
      new Deno.Command("ip", { args: ["netns", "del", name], stderr: "null" }).outputSync();
      removed.push(`netns ${name}`);
    }
  }
  for (const e of Deno.readDirSync("/sys/fs/bpf")) {
    if (STALE.test(e.name) && !ownerAlive(e.name)) {
      new Deno.Command("rm", { args: ["-rf", `/sys/fs/bpf/${e.name}`] }).outputSync();
      removed.push(`pins ${e.name}`);
    }
  }
  for (const e of Deno.readDirSync("/tmp")) {
    const m = /^merbridge-nettool-(\d+)-/.exec(e.name);
    if (!m) continue;
    try {
      Deno.statSync(`/proc/${m[1]}`);
    } catch {
      Deno.removeSync(`/tmp/${e.name}`, { recursive: true });
      removed.push(`temp ${e.name}`);
    }
  }
  const cg = cgroup2Root();
  for (const e of Deno.readDirSync(cg)) {
    if (e.isDirectory && STALE.test(e.name) && !ownerAlive(e.name)) {
      try {
        // Only processes a dead test run started live in its cgroup: end them with it.
        Deno.writeTextFileSync(`${cg}/${e.name}/cgroup.kill`, "1");
        for (let i = 0; i < 50 && Deno.readTextFileSync(`${cg}/${e.name}/cgroup.procs`).trim(); i++) {
          new Deno.Command("sleep", { args: ["0.05"] }).outputSync();
        }
        Deno.removeSync(`${cg}/${e.name}`);
        removed.push(`cgroup ${e.name}`);
      } catch { /* still busy: next sweep */ }
    }
  }
  return removed;
}

export class Scope implements AsyncDisposable {
  #cleanups: (() => unknown)[] = [];
  readonly errors: unknown[] = [];

  defer(fn: () => unknown): void {
    this.#cleanups.push(fn);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    while (this.#cleanups.length) {
      const fn = this.#cleanups.pop()!;
      try {
        await fn();
      } catch (e) {
        this.errors.push(e);
      }
    }
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; throws with its stderr unless `allowFail`. */
export async function run(
  cmd: string,
  args: string[],
  opts: { allowFail?: boolean; stdin?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const p = new Deno.Command(cmd, {
    args,
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await p.output();
  const r = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if (r.code !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  }
  return r;
}

/** Runs a command inside a named network namespace (nsenter keeps /sys and bpffs visible). */
export function inNs(ns: string, cmd: string, args: string[], opts: { allowFail?: boolean } = {}) {
  return run("nsenter", [`--net=/run/netns/${ns}`, "--", cmd, ...args], opts);
}

export async function createNetns(scope: Scope, name: string): Promise<string> {
  await run("ip", ["netns", "add", name]);
  scope.defer(() => run("ip", ["netns", "del", name], { allowFail: true }));
  await inNs(name, "ip", ["link", "set", "lo", "up"]);
  return name;
}

/** A child cgroup of the cgroup2 root, removed at the end (after its processes are gone). */
export async function createCgroup(scope: Scope, name: string): Promise<string> {
  const path = `${cgroup2Root()}/${name}`;
  await Deno.mkdir(path);
  scope.defer(async () => {
    for (let i = 0; i < 50; i++) {
      try {
        await Deno.remove(path);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await Deno.remove(path);
  });
  return path;
}

export interface SpawnOptions {
  netns?: string;
  cgroup?: string;
  uid?: number;
  gid?: number;
}

/** A process we started; its stdout is parsed as JSON lines. */
export class Proc {
  readonly lines: Record<string, unknown>[] = [];
  readonly stderr: string[] = [];
  #child: Deno.ChildProcess;
  #waiters: (() => void)[] = [];
  readonly done: Promise<Deno.CommandStatus>;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    const out = this.#read(child.stdout, (l) => {
      try {
        this.lines.push(JSON.parse(l));
      } catch {
        this.lines.push({ raw: l });
      }
    });
    const err = this.#read(child.stderr, (l) => this.stderr.push(l));
    // Done means exited AND every line read, so callers never race the stream readers.
    this.done = Promise.all([child.status, out, err]).then(([st]) => st);
  }

  get pid(): number {
    return this.#child.pid;
  }

  async #read(stream: ReadableStream<Uint8Array>, onLine: (l: string) => void) {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
        this.#waiters.splice(0).forEach((w) => w());
      }
    }
    if (buf) onLine(buf);
    this.#waiters.splice(0).forEach((w) => w());
  }

  /** Waits until a stdout line satisfies `pred`. */
  async waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs = 5000, what = "line") {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    while (true) {
      for (; seen < this.lines.length; seen++) if (pred(this.lines[seen]!)) return this.lines[seen]!;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out waiting for ${what}; stdout: ${JSON.stringify(this.lines)} stderr: ${
            this.stderr.join("\n")
          }`,
        );
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 100));
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  kill(signal: Deno.Signal = "SIGKILL") {
    try {
      this.#child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/**
 * Starts a process in a namespace, a cgroup and as a uid. The cgroup move happens in the shell before
 * exec, so the process never runs outside the cgroup; nsenter and setpriv exec in place, so the PID we
 * hold is the process itself.
 */
export function spawn(scope: Scope, cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
  const inner: string[] = [];
  if (opts.uid !== undefined) {
    const gid = opts.gid ?? opts.uid;
    inner.push("setpriv", `--reuid=${opts.uid}`, `--regid=${gid}`, "--clear-groups", "--");
  }
  inner.push(cmd, ...args);
  let argv: string[] = opts.cgroup
    ? ["sh", "-c", `echo $$ > '${opts.cgroup}/cgroup.procs' && exec "$@"`, "sh", ...inner]
    : inner;
  if (opts.netns) argv = ["nsenter", `--net=/run/netns/${opts.netns}`, "--", ...argv];
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const p = new Proc(child);
  scope.defer(async () => {
    p.kill();
    await p.done;
  });
  return p;
}

/** Runs nettool.py to completion inside a pod and returns its single JSON result line. */
export async function nettool(
  opts: SpawnOptions,
  args: string[],
): Promise<Record<string, unknown>> {
  await using scope = new Scope();
  const p = spawn(scope, PYTHON, ["-u", NETTOOL, ...args], opts);
  await p.done;
  const last = p.lines.at(-1);
  if (!last) throw new Error(`nettool ${args.join(" ")} printed nothing: ${p.stderr.join("\n")}`);
  return last;
}

export function startNettool(scope: Scope, opts: SpawnOptions, args: string[]): Proc {
  return spawn(scope, PYTHON, ["-u", NETTOOL, ...args], opts);
}

export interface TestNode {
  ns: string;
  /** First three octets of the pod subnet, e.g. "10.248.3". */
  subnet: string;
  prefix: string;
}

let subnetSeq = 0;

/** A "node": a namespace holding a bridge that pods attach to, with forwarding on. */
export async function createNode(scope: Scope, prefix = uniq()): Promise<TestNode> {
  const ns = await createNetns(scope, `${prefix}n`);
  subnetSeq++;
  const subnet = `10.248.${(Deno.pid + subnetSeq) % 250}`;
  await inNs(ns, "ip", ["link", "add", "br0", "type", "bridge"]);
  await inNs(ns, "ip", ["addr", "add", `${subnet}.1/24`, "dev", "br0"]);
  await inNs(ns, "ip", ["link", "set", "br0", "up"]);
  await inNs(ns, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
  return { ns, subnet, prefix };
}

export interface TestPod {
  name: string;
  ns: string;
  ip: string;
  /** The pod's IPv6 address, once addIpv6 gave it one. */
  ip6?: string;
  hostIf: string;
}

/**
 * Makes a pod dual-stack: fd00:<third octet of the node subnet>::<host octet>/64 on eth0, and ::6 on
 * lo, where istio-iptables puts it so that the proxy can bind it for its inbound passthrough.
 * Duplicate address detection is skipped so the address is usable at once.
 */
export async function addIpv6(pod: TestPod, node: TestNode): Promise<string> {
  const ip6 = `fd00:${node.subnet.split(".")[2]}::${pod.ip.split(".")[3]}`;
  await inNs(pod.ns, "ip", ["-6", "addr", "add", `${ip6}/64`, "dev", "eth0", "nodad"]);
  await inNs(pod.ns, "ip", ["-6", "addr", "add", "::6/128", "dev", "lo", "nodad"]);
  pod.ip6 = ip6;
  return ip6;
}

/** A "pod": a namespace with eth0 on the node's bridge. */
export async function createPod(
  scope: Scope,
  node: TestNode,
  name: string,
  hostOctet: number,
): Promise<TestPod> {
  const ns = await createNetns(scope, `${node.prefix}${name}`);
  const hostIf = `${node.prefix}${name}h`.slice(0, 15);
  const ip = `${node.subnet}.${hostOctet}`;
  await inNs(node.ns, "ip", ["link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
  await inNs(node.ns, "ip", ["link", "set", hostIf, "master", "br0", "up"]);
  await inNs(ns, "ip", ["addr", "add", `${ip}/24`, "dev", "eth0"]);
  await inNs(ns, "ip", ["link", "set", "eth0", "up"]);
  await inNs(ns, "ip", ["route", "add", "default", "via", `${node.subnet}.1`]);
  return { name, ns, ip, hostIf };
}

export async function sleep(ms: number) {
  await new Promise((r) => setTimeout(r, ms));
}

// A run that died earlier (SIGKILL, OOM, a runner abort) could not clean up: do it before building more.
if (Deno.uid() === 0) sweepStale();

/** The most receive-queue memory the pod's TCP sockets held at once during a run (ss -tm "r"). */
export interface QueuePeak {
  totalBytes: number;
  socketBytes: number;
  samples: number;
}

/**
 * Samples the receive memory of every TCP socket in a namespace until stopped. The sockmap fast path
 * delivers into the peer's queue without the receive-window backpressure of TCP, so this is where an
 * app that writes faster than its proxy reads shows up.
 */
export function sampleQueues(ns: string, everyMs: number): { stop: () => Promise<QueuePeak> } {
  const peak: QueuePeak = { totalBytes: 0, socketBytes: 0, samples: 0 };
  let running = true;
  const loop = (async () => {
    while (running) {
      const out = await new Deno.Command("nsenter", {
        args: [`--net=/run/netns/${ns}`, "--", "ss", "-tmnH"],
        stdout: "piped",
        stderr: "null",
      }).output();
      const rs = [...new TextDecoder().decode(out.stdout).matchAll(/skmem:\(r(\d+),/g)].map((m) =>
        Number(m[1])
      );
      peak.samples++;
      peak.totalBytes = Math.max(peak.totalBytes, rs.reduce((a, b) => a + b, 0));
      peak.socketBytes = Math.max(peak.socketBytes, ...rs, 0);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return peak;
    },
  };
}
