// Read-only views of a node's datapath, from the pins: they work whether or not a daemon runs.
import { progInfo } from "../../bpf/info.ts";
import { BpfLink } from "../../bpf/link.ts";
import { attachmentsFile, readRecordsForDisplay } from "../../daemon/state_store.ts";
import { PinnedDatapathMaps, pinnedLinks } from "../../datapath/datapath.ts";
import { decodePairKey } from "../../maps/layouts.ts";
import { MAP_NAMES } from "../../maps/manager.ts";
import { UsageError } from "../args.ts";
import { type Command, printJson, printTable } from "../command.ts";
import { CNI_INSTALL_FLAGS, DEFAULTS, LOG_FLAGS, OUTPUT_FLAGS, PIN_FLAGS } from "../options.ts";
import { formatPortRange } from "../../mesh/annotations.ts";
import type { PodPolicy, PortList } from "../../mesh/types.ts";
import { VERSION } from "../../version.ts";
import { subsystemHealth } from "../health.ts";
import { daemonPods, type PodIdentity } from "../local_api.ts";

const INSPECT_FLAGS = {
  ...PIN_FLAGS,
  "state-dir": CNI_INSTALL_FLAGS["state-dir"],
  ...OUTPUT_FLAGS,
  ...LOG_FLAGS,
} as const;

function readAttachments(stateDir: string) {
  return readRecordsForDisplay(attachmentsFile(stateDir));
}

function linkRows(pinPath: string) {
  return pinnedLinks(pinPath).map((l) => {
    try {
      using link = BpfLink.openPinned(l.path);
      const info = link.info();
      const prog = progInfo({ id: info.progId });
      return { hook: l.hook, cgroupId: l.cgroupId, linkId: info.id, program: prog.name, progId: prog.id };
    } catch (e) {
      return {
        hook: l.hook,
        cgroupId: l.cgroupId,
        linkId: 0,
        program: `? (${(e as Error).message})`,
        progId: 0,
      };
    }
  });
}

function policySummary(p: PodPolicy): string {
  const pl = (l: PortList) => l.all ? "*" : l.ranges.map(formatPortRange).join(",") || "-";
  const cl = (l: { all: boolean; cidrs: { addr: string; prefix: number }[] }) =>
    l.all ? "*" : l.cidrs.map((c) => `${c.addr}/${c.prefix}`).join(",") || "-";
  return [
    `out ports +${pl(p.includeOutboundPorts)} -${pl(p.excludeOutboundPorts)}`,
    `out ranges +${cl(p.includeOutboundCidrs)} -${cl(p.excludeOutboundCidrs)}`,
    `in ports +${pl(p.includeInboundPorts)} -${pl(p.excludeInboundPorts)}`,
    `status ${p.statusPort || "-"}`,
  ].join("; ");
}

const STATUS_FLAGS = {
  ...INSPECT_FLAGS,
  "cni-config-dir": CNI_INSTALL_FLAGS["cni-config-dir"],
  "cni-bin-dir": CNI_INSTALL_FLAGS["cni-bin-dir"],
  "daemon-addr": {
    type: "string",
    default: `127.0.0.1:${DEFAULTS.metricsAddr.split(":").at(-1)}`,
    placeholder: "HOST:PORT",
    description: "the running daemon's HTTP address, for its health",
  },
} as const;

export const statusCommand: Command<typeof STATUS_FLAGS> = {
  name: "status",
  summary: "health of each subsystem, what is attached where, map fill and the BPF counters",
  flags: STATUS_FLAGS,
  async run(f) {
    const pinPath = f["bpf-pin-path"];
    using pm = new PinnedDatapathMaps(pinPath);
    const cfg = pm.maps.meshConfig();
    const links = linkRows(pinPath);
    // The connection tables count themselves (walking a full one would take seconds); the rest is small.
    const fill = pm.maps.tableFill();
    const maps = MAP_NAMES.map((n) => {
      const m = pm.map(n);
      let entries: number | string = "-";
      if (n in fill) entries = fill[n as keyof typeof fill];
      else if (m && !["sock_pair_map", "counters", "events"].includes(n)) entries = [...m.keys()].length;
      return { map: n, entries, capacity: m?.maxEntries ?? 0 };
    });
    const counters = pm.maps.counters();
    const attachments = readAttachments(f["state-dir"]);
    const subsystems = await subsystemHealth({
      pm,
      config: cfg,
      links,
      attachments,
      daemonAddr: f["daemon-addr"],
      cniConfigDir: f["cni-config-dir"],
      cniBinDir: f["cni-bin-dir"],
    });
    if (f.output === "json") {
      printJson({
        version: VERSION,
        pinPath,
        subsystems,
        config: cfg ?? null,
        links,
        maps,
        counters,
        attachments,
      });
      return 0;
    }
    console.log(`merbridge ${VERSION}, pins at ${pinPath}`);
    console.log("");
    printTable(subsystems.map((x) => [x.subsystem, x.health, x.detail]), ["SUBSYSTEM", "HEALTH", "DETAIL"]);
    if (cfg) {
      console.log(
        `mesh ports: outbound ${cfg.outboundPort}, inbound ${cfg.inboundPort}, dns ${cfg.dnsPort} ` +
          `(capture ${cfg.dnsCapture ? "on" : "off"}); proxy uid ${cfg.proxyUid}; cni-mode ${cfg.cniMode}; ` +
          `sockmap fast path ${cfg.sockmap ? "on" : "off"}`,
      );
    } else console.log("mesh config: not set (programs leave all traffic alone)");
    console.log("");
    printTable(links.map((l) => [l.hook, l.cgroupId, l.linkId, l.program, l.progId]), [
      "HOOK",
      "CGROUP-ID",
      "LINK",
      "PROGRAM",
      "PROG-ID",
    ]);
    console.log("");
    printTable(maps.map((m) => [m.map, m.entries, m.capacity]), ["MAP", "ENTRIES", "CAPACITY"]);
    console.log("");
    printTable(Object.entries(counters).map(([k, v]) => [k, v.toString()]), ["COUNTER", "VALUE"]);
    if (attachments.length) {
      console.log("");
      printTable(
        attachments.map((a) => [`${a.podNamespace}/${a.podName}`, a.podIp, a.mark, a.hook, a.ifName]),
        ["POD", "IP", "MARK", "INGRESS", "IF"],
      );
    }
    return 0;
  },
};

const PODS_FLAGS = {
  ...INSPECT_FLAGS,
  "run-dir": CNI_INSTALL_FLAGS["run-dir"],
} as const;

/**
 * The daemon's pod table over the local API (the root-only unix socket under `runDir`). Kept here
 * for the commands that import it from this module.
 */
export { daemonPods };

export const podsCommand: Command<typeof PODS_FLAGS> = {
  name: "pods",
  summary: "meshed pods of this node with their decoded interception config",
  flags: PODS_FLAGS,
  async run(f) {
    using pm = new PinnedDatapathMaps(f["bpf-pin-path"]);
    const attachments = readAttachments(f["state-dir"]);
    const known = await daemonPods(f["run-dir"]) ?? [];
    // A dual-stack pod has a local_pods entry under each of its IPs; its identity names both.
    const has = (ips: { ip4: string; ip6: string }, ip: string) => ips.ip4 === ip || ips.ip6 === ip;
    const marks = pm.maps.markIps();
    const cookies = pm.maps.netnsPodIps();
    const rows = [...pm.maps.pods()].map(([ip, policy]) => {
      const a = attachments.find((x) => x.podIp === ip);
      const e = known.find((x) => x.ip === ip || x.ip6 === ip);
      const mark = [...marks].find(([, mips]) => has(mips, ip))?.[0];
      const pod = e ? `${e.namespace}/${e.name}` : a ? `${a.podNamespace}/${a.podName}` : "";
      // Without a daemon the maps still tell whether connect4 can know the pod, not how it was found.
      const identity: PodIdentity[] = e?.identity ??
        [...cookies].filter(([, cips]) => has(cips, ip)).map(([c]) => ({
          via: a?.netnsCookie === c.toString() ? "cni" : "netns",
          cookie: c.toString(),
          netns: null,
        }));
      if (mark !== undefined && !identity.some((i) => i.via === "cni")) {
        identity.push({ via: "mark", cookie: null, netns: null });
      }
      return { ip, pod, mark: mark ?? null, identity, policy, warnings: e?.warnings ?? [] };
    }).sort((x, y) => x.ip.localeCompare(y.ip, undefined, { numeric: true }));
    if (f.output === "json") printJson(rows);
    else {
      printTable(
        rows.map((r) => [
          r.ip,
          r.pod || "-",
          r.mark ?? "-",
          r.identity.map((i) => i.cookie ? `${i.via}:${i.cookie}` : i.via).join(",") || "none",
          policySummary(r.policy),
        ]),
        ["IP", "POD", "MARK", "IDENTITY", "CONFIG"],
      );
      const none = rows.filter((r) => r.identity.length === 0);
      if (none.length) {
        console.log(
          `${none.length} pod(s) not identified: their connections get the mesh defaults, not their annotations`,
        );
      }
      for (const r of rows) {
        for (const w of r.warnings) {
          console.log(`warning: ${r.pod}: ${w.annotation}: ${JSON.stringify(w.item)}: ${w.reason}`);
        }
      }
    }
    return 0;
  },
};

/** `ip` is the pod's primary address (its IPv4, else its IPv6); `ip6` is there when it has both. */
function ipsRow(ips: { ip4: string; ip6: string }): { ip: string; ip6?: string } {
  return ips.ip4 && ips.ip6 ? { ip: ips.ip4, ip6: ips.ip6 } : { ip: ips.ip4 || ips.ip6 };
}

const DUMP_FLAGS = { ...PIN_FLAGS, ...OUTPUT_FLAGS, ...LOG_FLAGS } as const;

export const mapsDumpCommand: Command<typeof DUMP_FLAGS> = {
  name: "maps dump",
  usage: "maps dump NAME [flags]",
  summary: `decoded entries of one datapath map (${MAP_NAMES.join(", ")})`,
  flags: DUMP_FLAGS,
  positionals: true,
  run(f) {
    const name = f._[0];
    if (!name || !(MAP_NAMES as readonly string[]).includes(name)) {
      throw new UsageError(
        `maps dump: give one of ${MAP_NAMES.join(", ")}${name ? `, not ${JSON.stringify(name)}` : ""}`,
      );
    }
    using pm = new PinnedDatapathMaps(f["bpf-pin-path"]);
    let rows: unknown[];
    switch (name) {
      case "mesh_config":
        rows = [pm.maps.meshConfig() ?? null];
        break;
      case "local_pods":
        rows = [...pm.maps.pods()].map(([ip, policy]) => ({ ip, policy }));
        break;
      case "mark_pod_ips":
        rows = [...pm.maps.markIps()].map(([mark, ips]) => ({ mark, ...ipsRow(ips) }));
        break;
      case "pair_orig_dst":
        rows = pm.maps.pairs();
        break;
      case "ingress_syn":
        rows = pm.maps.handshakes();
        break;
      case "netns_pod_ips":
        rows = [...pm.maps.netnsPodIps()].map(([cookie, ips]) => ({ cookie, ...ipsRow(ips) }));
        break;
      case "table_fill":
        rows = Object.entries(pm.maps.tableFill()).map(([table, entries]) => ({ table, entries }));
        break;
      case "sock_refs": {
        const m = pm.map("sock_refs")!;
        rows = [...m.keys()].map((k) => ({ key: decodePairKey(k) }));
        break;
      }
      case "counters":
        rows = Object.entries(pm.maps.counters()).map(([counter, value]) => ({ counter, value }));
        break;
      default: {
        const m = pm.map("sock_pair_map")!;
        rows = [...m.keys()].map((k) => ({ key: decodePairKey(k) }));
      }
    }
    if (f.output === "json") printJson(rows);
    else {for (const r of rows) {
        console.log(JSON.stringify(r, (_k, v) => typeof v === "bigint" ? v.toString() : v));
      }}
    return Promise.resolve(0);
  },
};

export const versionCommand: Command<typeof OUTPUT_FLAGS> = {
  name: "version",
  summary: "print the version",
  flags: OUTPUT_FLAGS,
  run(f) {
    if (f.output === "json") printJson({ version: VERSION, deno: Deno.version.deno, defaults: DEFAULTS });
    else console.log(`merbridge ${VERSION} (deno ${Deno.version.deno})`);
    return Promise.resolve(0);
  },
};
