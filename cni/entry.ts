// Process glue for plugin mode: decides whether this process was started as the CNI plugin and
// runs it on the real stdin/stdout/environment.
import process from "node:process";
import { basename } from "node:path";
import { runCniPlugin } from "./plugin.ts";
import { PLUGIN_TYPE } from "./spec.ts";

/**
 * True when the runtime started us as the plugin: under the plugin's name (a copy, a symlink or
 * `exec -a`; process.argv0 keeps the invoked name where Deno.execPath() resolves links), or with
 * CNI_COMMAND set, which every CNI runtime does.
 */
export function isCniPluginInvocation(
  argv0: string = process.argv0,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): boolean {
  return basename(argv0) === PLUGIN_TYPE || (env.CNI_COMMAND ?? "") !== "";
}

async function readAllStdin(): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of Deno.stdin.readable) {
    chunks.push(chunk);
    total += chunk.length;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function writeStdoutSync(s: string): void {
  const bytes = new TextEncoder().encode(s);
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
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
