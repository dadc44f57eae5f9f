// `merbridge status` per subsystem: whether each part the node depends on is healthy and, if not, why,
// from what the node shows (pins, links, the CNI config, namespaces) and what the daemon answers on
// its health endpoints. Each check says what it looked at, so an operator can follow it up.
import { PLUGIN_TYPE } from "../../cni/spec.ts";
import { isOurEntry, parseConfFile } from "../installer/conflist.ts";
import { activeConfFile } from "../installer/install.ts";
import { CGROUP_PROGRAMS } from "../datapath/catalog.ts";
import type { PinnedDatapathMaps } from "../datapath/datapath.ts";
import type { DecodedMeshConfig } from "../maps/layouts.ts";
import { pathExists } from "../util/fs.ts";

export type Health = "ok" | "warning" | "error" | "off";

export interface SubsystemHealth {
  subsystem: string;
  health: Health;
  detail: string;
}

export interface HealthInputs {
  pm: PinnedDatapathMaps;
  config: DecodedMeshConfig | undefined;
  links: { hook: string; program: string }[];
  attachments: { podNamespace: string; podName: string; podIp: string; netns: string; mark: number }[];
  daemonAddr: string;
  cniConfigDir: string;
  cniBinDir: string;
}

async function daemonAnswer(
  addr: string,
  path: string,
): Promise<{ status: number; text: string } | undefined> {
  try {
    const res = await fetch(`http://${addr}${path}`, { signal: AbortSignal.timeout(1000) });
    return { status: res.status, text: (await res.text()).trim() };
  } catch {
    return undefined;
  }
}

function programs(i: HealthInputs): SubsystemHealth {
  const want = CGROUP_PROGRAMS.filter((p) =>
    !p.feature || (p.feature === "dns-capture" && i.config?.dnsCapture)
  )
    .map((p) => p.hook);
  const have = new Set(i.links.filter((l) => l.program.startsWith("mb_")).map((l) => l.hook));
  const missing = want.filter((h) => !have.has(h));
  if (missing.length) {
    return { subsystem: "programs", health: "error", detail: `not attached: ${missing.join(", ")}` };
  }
  return { subsystem: "programs", health: "ok", detail: `${have.size} cgroup links, each with its program` };
}

function maps(i: HealthInputs): SubsystemHealth {
  if (!i.config) {
    return {
      subsystem: "maps",
      health: "error",
      detail: "no mesh config: the programs leave all traffic alone",
    };
  }
  const fill = i.pm.maps.tableFill();
  const c = i.pm.maps.counters();
  const problems: string[] = [];
  for (const [name, n] of Object.entries(fill)) {
    const cap = i.pm.map(name as "pair_orig_dst")?.maxEntries ?? 0;
    if (cap && n > cap * 0.9) problems.push(`${name} ${n}/${cap} full`);
  }
  if (c.table_full > 0n) problems.push(`${c.table_full} connections refused for a full table`);
  if (c.map_error > 0n) problems.push(`${c.map_error} map updates failed`);
  if (c.events_lost > 0n) problems.push(`${c.events_lost} monitor events lost`);
  return problems.length ? { subsystem: "maps", health: "warning", detail: problems.join("; ") } : {
    subsystem: "maps",
    health: "ok",
    detail: `connection table ${fill.pair_orig_dst} entries, no refusals`,
  };
}

async function daemon(i: HealthInputs): Promise<SubsystemHealth[]> {
  const live = await daemonAnswer(i.daemonAddr, "/healthz");
  if (!live) {
    return [
      {
        subsystem: "daemon",
        health: "error",
        detail: `nothing answers at ${i.daemonAddr} (the datapath stays attached)`,
      },
      { subsystem: "pod source", health: "error", detail: "unknown: no daemon" },
    ];
  }
  const ready = await daemonAnswer(i.daemonAddr, "/readyz");
  const out: SubsystemHealth[] = [{
    subsystem: "daemon",
    health: live.status !== 200 ? "error" : ready?.status !== 200 ? "warning" : "ok",
    detail: live.status !== 200 ? live.text : ready?.text ?? "no answer from /readyz",
  }];
  const metrics = (await daemonAnswer(i.daemonAddr, "/metrics"))?.text ?? "";
  const ev = (e: string) =>
    Number(
      new RegExp(`^merbridge_pod_source_events_total\\{event="${e}"\\} (\\d+)`, "m").exec(metrics)?.[1] ??
        NaN,
    );
  const errors = ev("error"), lists = ev("list"), restarts = ev("watch_restart");
  out.push({
    subsystem: "pod source",
    health: Number.isNaN(lists) ? "warning" : errors > 0 ? "warning" : "ok",
    detail: Number.isNaN(lists)
      ? "no pod source counters in /metrics"
      : `${lists} lists, ${restarts} watch restarts, ${errors} errors`,
  });
  return out;
}

/** Whether the runtime's active configuration (the installer's own rule for which file that is) chains us last. */
async function cniChain(i: HealthInputs): Promise<SubsystemHealth> {
  if (!i.config?.cniMode) return { subsystem: "cni chain", health: "off", detail: "CNI mode is off" };
  const bad = (detail: string): SubsystemHealth => ({ subsystem: "cni chain", health: "error", detail });
  let path: string | null;
  let file;
  try {
    path = await activeConfFile(i.cniConfigDir);
    if (!path) return bad(`no network configuration in ${i.cniConfigDir}`);
    file = parseConfFile(path, await Deno.readFile(path));
  } catch (e) {
    return bad(`${i.cniConfigDir}: ${(e as Error).message}`);
  }
  const name = path.slice(i.cniConfigDir.length + 1);
  const plugins = file.kind === "conflist" && Array.isArray(file.obj.plugins) ? file.obj.plugins : [file.obj];
  const types = plugins.map((p) => (p as { type?: string }).type ?? "?");
  if (!isOurEntry(plugins.at(-1))) return bad(`${name} chains ${types.join(" -> ")}, not us last`);
  if (!pathExists(`${i.cniBinDir}/${PLUGIN_TYPE}`)) return bad(`${i.cniBinDir}/${PLUGIN_TYPE} is missing`);
  return { subsystem: "cni chain", health: "ok", detail: `${name}: ${types.join(" -> ")}` };
}

function attachments(i: HealthInputs): SubsystemHealth {
  if (!i.config?.cniMode) return { subsystem: "attachments", health: "off", detail: "CNI mode is off" };
  const marks = i.pm.maps.marks();
  const bad: string[] = [];
  for (const a of i.attachments) {
    const pod = `${a.podNamespace}/${a.podName}`;
    if (!pathExists(a.netns)) bad.push(`${pod}: namespace gone`);
    else if (marks.get(a.mark) !== a.podIp) bad.push(`${pod}: mark entry missing`);
  }
  return bad.length
    ? { subsystem: "attachments", health: "error", detail: bad.join("; ") }
    : { subsystem: "attachments", health: "ok", detail: `${i.attachments.length} pods attached` };
}

function identity(i: HealthInputs): SubsystemHealth {
  const known = new Set(
    [...i.pm.maps.markIps().values(), ...i.pm.maps.netnsPodIps().values()].flatMap((x) => [x.ip4, x.ip6]),
  );
  const pods = [...i.pm.maps.pods().keys()];
  const missing = pods.filter((ip) => !known.has(ip));
  return missing.length
    ? {
      subsystem: "pod identity",
      health: "warning",
      detail:
        `${missing.length} of ${pods.length} meshed pods not identified (their own rules cannot apply): ${
          missing.slice(0, 5).join(", ")
        }`,
    }
    : { subsystem: "pod identity", health: "ok", detail: `all ${pods.length} meshed pods identified` };
}

export async function subsystemHealth(i: HealthInputs): Promise<SubsystemHealth[]> {
  return [programs(i), maps(i), ...await daemon(i), identity(i), await cniChain(i), attachments(i)];
}
