// The plugin runs once per pod start, so what it loads is part of every pod's start-up time: its
// static module graph must stay free of node: and npm: modules (the first one starts Deno's Node
// compat layer, 15-25 ms of CPU) and of the global timers (setTimeout's first use loads Node's
// timers, about 10 ms). Dynamic imports (the membership check without the daemon) are exempt. Deno
// does load and parse the modules a literal dynamic import reaches, before the first line runs:
// main.ts reaches the CLI only through importLater, so run as the plugin it resolves no more.
import assert from "node:assert/strict";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const ENTRY = `${ROOT}/cni/entry.ts`;
const MAIN = `${ROOT}/main.ts`;
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

/** The modules `deno run entry` resolves at start: code imports, dynamic ones too unless `staticOnly`. */
async function codeGraph(
  entry: string,
  staticOnly = false,
): Promise<{ modules: InfoModule[]; reached: string[] }> {
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
      if (!to || (staticOnly && d.isDynamic) || seen.has(to)) continue;
      seen.add(to);
      todo.push(to);
    }
  }
  return { modules: info.modules, reached: [...seen] };
}

Deno.test("the plugin's entry loads no node: or npm: module and no global timer", async () => {
  const { modules, reached } = await codeGraph(ENTRY, true);
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

Deno.test("main.ts run as the plugin resolves the plugin's modules and no more", async () => {
  const plugin = (await codeGraph(ENTRY)).reached;
  const main = (await codeGraph(MAIN)).reached;
  const extra = main.filter((s) => !plugin.includes(s)).map((s) => s.slice(`file://${ROOT}/`.length));
  assert.deepEqual(extra.sort(), ["main.ts", "src/util/import_later.ts"]);
});

/** Every `importLater` target in our sources, as a path from the repository root. */
async function laterImports(): Promise<{ from: string; target: string }[]> {
  const found: { from: string; target: string }[] = [];
  const walk = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(`${ROOT}/${dir}`)) {
      const rel = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory && !e.name.startsWith(".") && !["tests", "testbed", "bench", "demo"].includes(rel)) {
        await walk(rel);
      } else if (e.isFile && rel.endsWith(".ts")) {
        const text = await Deno.readTextFile(`${ROOT}/${rel}`);
        for (const m of text.matchAll(/importLater<[^>]*>\(\s*new URL\("([^"]+)", import\.meta\.url\)/g)) {
          const target = new URL(m[1]!, `file://${ROOT}/${rel}`).pathname.slice(ROOT.length + 1);
          found.push({ from: rel, target });
        }
      }
    }
  };
  await walk("");
  return found;
}

Deno.test("every module imported later is embedded by `deno task compile`", async () => {
  const later = await laterImports();
  assert.ok(later.some((l) => l.from === "main.ts" && l.target === "src/cli/main.ts"), JSON.stringify(later));
  const tasks = JSON.parse(await Deno.readTextFile(CONFIG)).tasks as Record<string, string>;
  const included = [...tasks.compile!.matchAll(/--include (\S+)/g)].map((m) => m[1]);
  for (const l of later) {
    assert.ok(
      included.includes(l.target),
      `${l.from} imports ${l.target} later; compile lacks --include ${l.target}`,
    );
    assert.ok((await Deno.stat(`${ROOT}/${l.target}`)).isFile, l.target);
  }
});

Deno.test("the CLI, and so every daemon start, loads no npm: package: the YAML parser only for a pods file or kubeconfig", async () => {
  const cli = new URL("../../src/cli/main.ts", import.meta.url).pathname;
  const { modules, reached } = await codeGraph(cli, true);
  const npm = reached.filter((s) => s.startsWith("npm:"));
  assert.deepEqual(npm, [], `loaded by every daemon start: ${npm.join(", ")}`);
  assert.ok(reached.some((s) => s.endsWith("/src/daemon/daemon.ts")), "the walk reached the daemon");
  // Reachable, through the dynamic imports of the pod sources that need it.
  assert.ok(modules.some((m) => m.specifier.startsWith("npm:") || m.kind === "npm"));
});
