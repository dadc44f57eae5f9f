// Process glue for the CNI role: the runtime hands the config on stdin and reads exactly one JSON
// document from stdout.
import { runCniPlugin } from "../../cni/plugin.ts";

export async function runCniPluginMain(): Promise<number> {
  const chunks: Uint8Array[] = [];
  if (!Deno.stdin.isTerminal()) {
    for await (const c of Deno.stdin.readable) chunks.push(c);
  }
  const stdin = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    stdin.set(c, off);
    off += c.length;
  }
  const enc = new TextEncoder();
  return await runCniPlugin({
    env: Deno.env.toObject(),
    stdin,
    writeStdout: (s) => {
      const b = enc.encode(s);
      let n = 0;
      while (n < b.length) n += Deno.stdout.writeSync(b.subarray(n));
    },
  });
}
