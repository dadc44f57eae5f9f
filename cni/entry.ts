// Process glue for plugin mode: decides whether this process was started as the CNI plugin and
// runs it on the real stdin/stdout/environment. Nothing on this path imports a node: or npm: module:
// the first one starts Deno's Node compat layer, which costs every pod start 15-25 ms of CPU.
import { runCniPlugin } from "./plugin.ts";
import { PLUGIN_TYPE } from "./spec.ts";
import { joinChunks, writeAllSync } from "../src/util/bytes.ts";

/**
 * The name we were invoked under, as exec'd: a copy, a symlink or `exec -a` keep it, where
 * Deno.execPath() resolves links. Read from /proc (node:process's argv0 says the same, but loading
 * it is the cost above); "" when /proc cannot tell.
 */
export function invokedName(): string {
  try {
    const cmdline = Deno.readFileSync("/proc/self/cmdline");
    const end = cmdline.indexOf(0);
    return new TextDecoder().decode(end < 0 ? cmdline : cmdline.subarray(0, end));
  } catch {
    return "";
  }
}

/**
 * True when the runtime started us as the plugin: with CNI_COMMAND set, which every CNI runtime
 * does, or under the plugin's name.
 */
export function isCniPluginInvocation(
  argv0?: string,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): boolean {
  if ((env.CNI_COMMAND ?? "") !== "") return true;
  const name = argv0 ?? invokedName();
  return name.slice(name.lastIndexOf("/") + 1) === PLUGIN_TYPE;
}

/** Plain reads: the stream API (Deno.stdin.readable) costs the plugin about 6 ms of CPU more per run. */
async function readAllStdin(): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (;;) {
    const buf = new Uint8Array(64 * 1024);
    const n = await Deno.stdin.read(buf);
    if (n === null) break;
    chunks.push(buf.subarray(0, n));
  }
  return joinChunks(chunks);
}

function writeStdoutSync(s: string): void {
  writeAllSync(Deno.stdout, new TextEncoder().encode(s));
}

/** Runs the plugin on this process's stdin, stdout and environment; returns the exit code. */
export async function cniPluginMain(): Promise<number> {
  const env = Deno.env.toObject();
  return await runCniPlugin({
    env,
    // VERSION needs no configuration; not waiting for stdin lets it be run by hand from a shell.
    stdin: env.CNI_COMMAND === "VERSION" ? new Uint8Array() : await readAllStdin(),
    writeStdout: writeStdoutSync,
  });
}

if (import.meta.main) {
  Deno.exit(await cniPluginMain());
}
