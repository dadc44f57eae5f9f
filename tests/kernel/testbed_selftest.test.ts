// The testbed must leave nothing behind when a test fails: namespaces, pins, cgroups, programs.
import assert from "node:assert/strict";
import { cgroup2Root } from "../../src/cgroup/cgroup2.ts";
import { ROOT, run, sweepStale } from "../../testbed/mod.ts";

async function residue(prefix: string) {
  const netns = (await run("ip", ["netns", "list"])).stdout.split("\n").filter((l) => l.startsWith(prefix));
  const pins = [...Deno.readDirSync("/sys/fs/bpf")].map((e) => e.name).filter((n) => n.startsWith(prefix));
  const cgroups = [...Deno.readDirSync(cgroup2Root())].map((e) => e.name).filter((n) => n.startsWith(prefix));
  return { netns, pins, cgroups };
}

async function ourProgs(): Promise<number> {
  const out = await run("bpftool", ["-j", "prog", "list"]);
  return (JSON.parse(out.stdout) as { name?: string }[]).filter((p) => p.name?.startsWith("mb_")).length;
}

async function pidsInNetns(names: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const n of names) {
    const out = await run("ip", ["netns", "pids", n], { allowFail: true });
    pids.push(...out.stdout.split("\n").filter(Boolean).map(Number));
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    return !Deno.readTextFileSync(`/proc/${pid}/stat`).includes(") Z ");
  } catch {
    return false;
  }
}

async function runFailing(how: "assert" | "exit") {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--quiet", `${ROOT}tests/kernel/fixtures/failing_world.ts`],
    env: { FAIL_HOW: how, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = await child.output();
  return { code: out.code, signal: out.signal, prefix: `mb${child.pid.toString(36).padStart(5, "0")}` };
}

Deno.test("kernel: a failing test leaves no namespaces, pins, cgroups or programs", async () => {
  const progsBefore = await ourProgs();
  const { code, prefix } = await runFailing("assert");
  assert.notEqual(code, 0, "the fixture must fail");
  assert.deepEqual(await residue(prefix), { netns: [], pins: [], cgroups: [] });
  assert.equal(await ourProgs(), progsBefore, "programs loaded by the failed test are gone");
});

Deno.test("kernel: leftovers of a test process that died are swept by the next run", async () => {
  const { signal, prefix } = await runFailing("exit");
  assert.equal(signal, "SIGKILL");
  const left = await residue(prefix);
  assert.ok(left.netns.length > 0, "a process that died mid-test cannot clean up itself");
  const orphans = await pidsInNetns(left.netns.map((l) => l.split(" ")[0]!));
  assert.ok(orphans.length > 0, "the dead run left its test peers running");
  const removed = sweepStale();
  assert.ok(removed.length > 0);
  assert.deepEqual(await residue(prefix), { netns: [], pins: [], cgroups: [] });
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(orphans.filter(alive), [], "the dead run's test peers were ended with its namespaces");
});
