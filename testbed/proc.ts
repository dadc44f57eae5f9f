// Running commands and long-lived processes for the testbed: to completion with their output, or as a
// Proc owned by a Scope, placed in a namespace, a cgroup and a uid, and killed by its own PID when the
// scope ends.
import type { Scope } from "./scope.ts";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; throws with its stderr unless `allowFail`. */
export async function run(
  cmd: string,
  args: string[],
  opts: { allowFail?: boolean; stdin?: string; env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<RunResult> {
  const p = new Deno.Command(cmd, {
    args,
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
    clearEnv: opts.clearEnv,
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

export interface SpawnOptions {
  netns?: string;
  cgroup?: string;
  uid?: number;
  gid?: number;
  /** A descriptor limit (soft and hard), raised while still root, before the uid changes. */
  nofile?: number;
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

  /** Waits until a stdout line satisfies `pred`, looking at lines from index `from` on. */
  async waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs = 5000, what = "line", from = 0) {
    const deadline = Date.now() + timeoutMs;
    let seen = from;
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

  /**
   * Waits for the process to end by itself within `timeoutMs`, or until `abort` fires; a process that
   * overruns is killed (and waited for). True if it ended by itself.
   */
  async finish(timeoutMs: number, abort?: AbortSignal): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let cut = () => {};
    const overrun = new Promise<boolean>((r) => {
      cut = () => r(false);
      timer = setTimeout(cut, timeoutMs);
      if (abort?.aborted) cut();
      abort?.addEventListener("abort", cut);
    });
    const ended = await Promise.race([this.done.then(() => true), overrun]);
    clearTimeout(timer);
    abort?.removeEventListener("abort", cut);
    if (!ended) {
      this.kill();
      await this.done;
    }
    return ended;
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
 * exec, so the process never runs outside the cgroup; nsenter, prlimit (root may raise a hard limit) and
 * setpriv exec in place, so the PID we hold is the process itself.
 */
export function spawn(scope: Scope, cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
  const inner: string[] = [];
  if (opts.uid !== undefined) {
    const gid = opts.gid ?? opts.uid;
    inner.push("setpriv", `--reuid=${opts.uid}`, `--regid=${gid}`, "--clear-groups", "--");
  }
  inner.push(cmd, ...args);
  if (opts.nofile) inner.unshift("prlimit", `--nofile=${opts.nofile}:${opts.nofile}`, "--");
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

export async function sleep(ms: number) {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * Turns the first SIGINT or SIGTERM into an abort of `ctl`, so that a run stops at its next step and its
 * scopes unwind as after a failure; `say` tells the user. Disposing it removes the handlers.
 */
export function abortOnSignals(ctl: AbortController, say: (sig: Deno.Signal) => void): Disposable {
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const h = () => {
      if (ctl.signal.aborted) return;
      say(sig);
      ctl.abort(new Error(`interrupted by ${sig}`));
    };
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });
  return {
    [Symbol.dispose]() {
      for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
    },
  };
}
