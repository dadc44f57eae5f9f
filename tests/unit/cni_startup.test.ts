// The plugin runs once per pod start, so what it loads is part of every pod's start-up time: its
// static module graph must stay free of node: and npm: modules (the first one starts Deno's Node
// compat layer, 15-25 ms of CPU) and of the global timers (setTimeout's first use loads Node's
// timers, about 10 ms). Dynamic imports (the membership check without the daemon) are exempt.
import assert from "node:assert/strict";

const ENTRY = new URL("../../cni/entry.ts", import.meta.url).pathname;
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

interface InfoDep {
  specifier: string;
  code?: { specifier?: string };
  isDynamic?: boolean;
}
interface InfoModule {
  specifier: string;
  kind?: string;
  local?: string;
  dependencies?: InfoDep[];
}

async function staticGraph(entry: string): Promise<{ modules: InfoModule[]; reached: string[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--config", CONFIG, entry],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
  const bySpec = new Map(info.modules.map((m) => [m.specifier, m]));
  const root = `file://${entry}`;
  const seen = new Set<string>([root]);
  const todo = [root];
  while (todo.length) {
    const m = bySpec.get(todo.pop()!);
    for (const d of m?.dependencies ?? []) {
      const to = d.code?.specifier;
      if (!to || d.isDynamic || seen.has(to)) continue;
      seen.add(to);
      todo.push(to);
    }
  }
  return { modules: info.modules, reached: [...seen] };
}

Deno.test("the plugin's entry loads no node: or npm: module and no global timer", async () => {
  const { modules, reached } = await staticGraph(ENTRY);
  const foreign = reached.filter((s) => !s.startsWith("file://"));
  assert.deepEqual(foreign, [], `loaded by the plugin on every run: ${foreign.join(", ")}`);
  const local = new Map(modules.map((m) => [m.specifier, m.local]));
  for (const s of reached) {
    const text = await Deno.readTextFile(local.get(s) ?? new URL(s).pathname);
    assert.doesNotMatch(text, /\bset(Timeout|Interval)\(/, `${s} uses a global timer`);
  }
  // The check looks where it should: the YAML parser is reached only through a dynamic import (the
  // membership check), and the walk did reach the daemon protocol.
  assert.ok(reached.some((s) => s.endsWith("/cni/protocol.ts")));
  assert.ok(modules.some((m) => m.specifier.startsWith("npm:") || m.kind === "npm" || m.kind === "external"));
});

Deno.test("the CLI, and so every daemon start, loads no npm: package: the YAML parser only for a pods file or kubeconfig", async () => {
  const cli = new URL("../../src/cli/main.ts", import.meta.url).pathname;
  const { modules, reached } = await staticGraph(cli);
  const npm = reached.filter((s) => s.startsWith("npm:"));
  assert.deepEqual(npm, [], `loaded by every daemon start: ${npm.join(", ")}`);
  assert.ok(reached.some((s) => s.endsWith("/src/daemon/daemon.ts")), "the walk reached the daemon");
  // Reachable, through the dynamic imports of the pod sources that need it.
  assert.ok(modules.some((m) => m.specifier.startsWith("npm:") || m.kind === "npm"));
});
