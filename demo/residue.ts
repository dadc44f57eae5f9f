// Proof that the node is back as it was. Other agents and test runs may share this machine, so "ours"
// is defined precisely: names carrying this run's prefix, and the BPF maps we pinned plus every program
// that uses one of them (looked up by ID while they existed, since names like mb_connect4 are not
// unique to this run).
import { cgroup2Root } from "../src/cgroup/cgroup2.ts";
import { run, sleep } from "../testbed/mod.ts";
import { equal, type Ledger } from "./ui.ts";
import { pathExists } from "../src/util/fs.ts";

export interface Footprint {
  prefix: string;
  dir: string;
  pinPath: string;
  daemonPid: number;
  mapIds: number[];
  progIds: number[];
}

async function bpftool<T>(args: string[]): Promise<T> {
  return JSON.parse((await run("bpftool", ["-j", ...args])).stdout) as T;
}

/** The IDs of our pinned maps and of the programs using them, taken while everything is attached. */
export async function bpfFootprint(pinPath: string): Promise<{ mapIds: number[]; progIds: number[] }> {
  const mapIds: number[] = [];
  for (const e of Deno.readDirSync(`${pinPath}/maps`)) {
    mapIds.push((await bpftool<{ id: number }>(["map", "show", "pinned", `${pinPath}/maps/${e.name}`])).id);
  }
  const progs = await bpftool<{ id: number; map_ids?: number[] }[]>(["prog", "list"]);
  const progIds = progs.filter((p) => p.map_ids?.some((m) => mapIds.includes(m))).map((p) => p.id);
  return { mapIds, progIds };
}

async function liveBpf(fp: Footprint): Promise<{ maps: number[]; progs: number[] }> {
  const maps = (await bpftool<{ id: number }[]>(["map", "list"])).map((m) => m.id);
  const progs = (await bpftool<{ id: number }[]>(["prog", "list"])).map((p) => p.id);
  return {
    maps: fp.mapIds.filter((id) => maps.includes(id)),
    progs: fp.progIds.filter((id) => progs.includes(id)),
  };
}

export async function checkNodeClean(ui: Ledger, fp: Footprint): Promise<void> {
  const netns = (await run("ip", ["netns", "list"])).stdout.split("\n").map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(fp.prefix));
  const pins = [...Deno.readDirSync("/sys/fs/bpf")].map((e) => e.name).filter((n) => n.startsWith(fp.prefix));
  const cg = cgroup2Root();
  const cgroups = [...Deno.readDirSync(cg)].map((e) => e.name).filter((n) => n.startsWith(fp.prefix));
  // The kernel frees programs and maps once their last reference is dropped, slightly after the fact.
  let live = await liveBpf(fp);
  for (let i = 0; i < 40 && (live.maps.length || live.progs.length); i++) {
    await sleep(50);
    live = await liveBpf(fp);
  }
  ui.check("the node is back as it was", [
    equal(`namespaces named ${fp.prefix}*`, "", netns.join(", ")),
    equal(`pins under /sys/fs/bpf/${fp.prefix}*`, "", pins.join(", ")),
    equal(`cgroups ${cg}/${fp.prefix}*`, "", cgroups.join(", ")),
    equal(`our BPF programs still loaded (of ${fp.progIds.length})`, "", live.progs.join(", ")),
    equal(`our BPF maps still allocated (of ${fp.mapIds.length})`, "", live.maps.join(", ")),
    equal("the daemon process", "gone", pathExists(`/proc/${fp.daemonPid}`) ? "still running" : "gone"),
    equal(`${fp.dir}`, "removed", pathExists(fp.dir) ? "still there" : "removed"),
  ], [
    `no namespace, pin, cgroup or temp dir of this run; ${fp.progIds.length} programs and ` +
    `${fp.mapIds.length} maps unloaded`,
  ]);
}
