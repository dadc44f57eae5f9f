// Asking the datapath why: `explain` works a connection through the live maps and the reference
// model; `monitor` streams what the programs actually decided, from their ring buffer.
import { PinnedMap } from "../../bpf/map_fd.ts";
import { RingBuffer } from "../../bpf/ring_buffer.ts";
import { PinnedDatapathMaps } from "../../datapath/datapath.ts";
import { monotonicNs } from "../../ffi/libc.ts";
import { decodeEvent, type MonitorEvent } from "../../monitor/events.ts";
import { ExplainError, explainLive } from "../../monitor/explain.ts";
import { UsageError } from "../args.ts";
import { type Command, printJson } from "../command.ts";
import { CNI_INSTALL_FLAGS, LOG_FLAGS, OUTPUT_FLAGS, PIN_FLAGS } from "../options.ts";
import { daemonPods } from "../local_api.ts";
import { attachmentsFile, readRecordsForDisplay } from "../../daemon/state_store.ts";

const DAEMON_FLAG = {
  "run-dir": {
    ...CNI_INSTALL_FLAGS["run-dir"],
    description: "the running daemon's runtime directory (its root-only socket gives pod names)",
  },
} as const;

const EXPLAIN_FLAGS = {
  "from-proxy": { type: "boolean", default: false, description: "the proxy makes the connection (its uid)" },
  "proxy-group": {
    type: "boolean",
    default: false,
    description: "a process with the proxy's group but another uid makes it",
  },
  source: { type: "string", placeholder: "ADDR", description: "the address the socket is bound to first" },
  inbound: { type: "boolean", default: false, description: "a connection into the pod on DEST's port" },
  ...DAEMON_FLAG,
  ...PIN_FLAGS,
  ...OUTPUT_FLAGS,
  ...LOG_FLAGS,
} as const;

/** A pod given as an IPv4 address or NAMESPACE/NAME (resolved through the daemon's pod table). */
async function resolvePod(pod: string, daemonAddr: string): Promise<{ ip: string; name: string | null }> {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(pod)) {
    const e = (await daemonPods(daemonAddr))?.find((x) => x.ip === pod);
    return { ip: pod, name: e ? `${e.namespace}/${e.name}` : null };
  }
  const [ns, name] = pod.includes("/") ? pod.split("/", 2) : ["default", pod];
  const pods = await daemonPods(daemonAddr);
  if (!pods) {
    throw new UsageError(`pod ${pod}: no daemon answers at ${daemonAddr} to resolve the name; give its IP`);
  }
  const e = pods.find((x) => x.namespace === ns && x.name === name);
  if (!e) throw new UsageError(`pod ${ns}/${name} is not a pod of this node`);
  if (!e.ip) throw new UsageError(`pod ${ns}/${name} has no IP yet`);
  return { ip: e.ip, name: `${ns}/${name}` };
}

export const explainCommand: Command<typeof EXPLAIN_FLAGS> = {
  name: "explain",
  usage: "explain POD DEST:PORT [flags]",
  summary: "the datapath's decision for one connection, and the rule that decided",
  flags: EXPLAIN_FLAGS,
  positionals: true,
  async run(f) {
    const [podArg, dest, ...extra] = f._;
    if (!podArg || !dest || extra.length) {
      throw new UsageError("explain needs POD (IP or NAMESPACE/NAME) and DEST:PORT, nothing more");
    }
    if (f["from-proxy"] && f["proxy-group"]) {
      throw new UsageError("--from-proxy and --proxy-group exclude each other");
    }
    if (f.inbound && (f["from-proxy"] || f["proxy-group"] || f.source)) {
      throw new UsageError(
        "--inbound describes a connection into the pod: no --from-proxy, --proxy-group or --source",
      );
    }
    const pod = await resolvePod(podArg, f["run-dir"]);
    using pm = new PinnedDatapathMaps(f["bpf-pin-path"]);
    let r;
    try {
      r = explainLive(pm.maps, {
        podIp: pod.ip,
        dest,
        caller: f["from-proxy"] ? "proxy" : f["proxy-group"] ? "proxy-group" : "app",
        source: f.source,
        inbound: f.inbound,
      });
    } catch (e) {
      if (e instanceof ExplainError) throw new UsageError(e.message);
      throw e;
    }
    if (f.output === "json") {
      printJson({ ...r, pod: { ...r.pod, name: pod.name } });
      return 0;
    }
    const who = pod.name ? `${pod.name} (${pod.ip})` : pod.ip;
    const what = r.query.inbound
      ? `into ${who} on ${dest}`
      : `${
        r.query.caller === "app"
          ? "the app"
          : r.query.caller === "proxy"
          ? "the proxy"
          : "a proxy-group process"
      } ` +
        `of ${who} to ${dest}${r.query.source ? ` from ${r.query.source}` : ""}`;
    const verdict = r.verdict === "redirect"
      ? "to the proxy's outbound port"
      : r.verdict === "inbound"
      ? "to the proxy's inbound port"
      : "left alone";
    console.log(`${what}: ${verdict}`);
    console.log(`  because ${r.reason}`);
    if (r.pod.meshed && !r.pod.identified && !r.query.inbound) {
      console.log("  (the pod is not identified yet: its own rules cannot apply to what it sends)");
    }
    return 0;
  },
};

const MONITOR_FLAGS = {
  "state-dir": CNI_INSTALL_FLAGS["state-dir"],
  pod: {
    type: "string",
    placeholder: "POD",
    description: "only events about this pod (IP or NAMESPACE/NAME)",
  },
  count: {
    type: "int",
    default: 0,
    min: 0,
    description: "stop after this many events (0: until interrupted)",
  },
  seconds: { type: "int", default: 0, min: 0, description: "stop after this long (0: until interrupted)" },
  ...DAEMON_FLAG,
  ...PIN_FLAGS,
  ...OUTPUT_FLAGS,
  ...LOG_FLAGS,
} as const;

const LEASE_NS = 3_000_000_000n;

function clock(tsNs: bigint, base: { mono: bigint; wall: number }): string {
  const wall = new Date(base.wall + Number((tsNs - base.mono) / 1_000_000n));
  return wall.toISOString().slice(11, 23);
}

function line(e: MonitorEvent, pod: string, base: { mono: bigint; wall: number }): string {
  const path = e.src ? `${e.src} -> ${e.dst}` : `-> ${e.dst}`;
  const orig = e.orig && e.kind !== "ingress" ? ` (original ${e.orig})` : "";
  return `${clock(e.tsNs, base)} ${e.kind.padEnd(8)} ${pod.padEnd(24)} ${path}${orig}: ${e.why}`;
}

export const monitorCommand: Command<typeof MONITOR_FLAGS> = {
  name: "monitor",
  summary: "a live stream of what the programs decided and why, one line per event",
  flags: MONITOR_FLAGS,
  async run(f) {
    const pinPath = f["bpf-pin-path"];
    const runDir = f["run-dir"];
    const only = f.pod ? await resolvePod(f.pod, runDir) : undefined;
    using pm = new PinnedDatapathMaps(pinPath);
    const eventsPin = `${pinPath}/maps/events`;
    using events = PinnedMap.open(eventsPin);
    let names = new Map<string, string>();
    const refreshNames = async (timeoutMs = 500) => {
      const pods = await daemonPods(runDir, timeoutMs) ?? [];
      // CNI attachments know the IPs a pod source may not have yet (a pod still Pending in the API).
      const attached = readRecordsForDisplay(attachmentsFile(f["state-dir"]));
      const next = new Map(attached.map((a) => [a.podIp, `${a.podNamespace}/${a.podName}`]));
      for (const p of pods) if (p.ip) next.set(p.ip, `${p.namespace}/${p.name}`);
      if (next.size) names = next;
    };
    await refreshNames(2000);
    let netnsPods = pm.maps.netnsPods();
    const base = { mono: monotonicNs(), wall: Date.now() };
    let seen = 0;
    const limit = f.count;
    const rb = new RingBuffer(events.fd, (rec) => {
      const e = decodeEvent(rec);
      const podIp = e.podIp ?? netnsPods.get(e.netns) ?? null;
      if (only && podIp !== only.ip) return;
      if (limit && seen >= limit) return;
      seen++;
      const pod = podIp ? names.get(podIp) ?? podIp : e.netns ? `netns ${e.netns}` : "-";
      if (f.output === "json") {
        console.log(
          JSON.stringify({ ...e, podIp, pod }, (_k, v) => typeof v === "bigint" ? v.toString() : v),
        );
      } else console.log(line(e, pod, base));
    });
    let stop = false;
    const onSignal = () => stop = true;
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    const deadline = f.seconds ? Date.now() + f.seconds * 1000 : Infinity;
    let lost = pm.maps.counters().events_lost;
    let renewed = 0;
    try {
      while (!stop && Date.now() < deadline && !(limit && seen >= limit)) {
        if (Date.now() - renewed >= 1000) {
          // A lease rather than a switch: a monitor killed without cleaning up stops the events anyway.
          pm.maps.setMonitorLease(monotonicNs() + LEASE_NS);
          renewed = Date.now();
          const now = pm.maps.counters().events_lost;
          if (now > lost) {
            const msg = `lost ${now - lost} events (the ring buffer was full)`;
            console.log(f.output === "json" ? JSON.stringify({ lost: String(now - lost) }) : msg);
          }
          lost = now;
          netnsPods = pm.maps.netnsPods();
          refreshNames().catch(() => {});
        }
        rb.poll(100);
        // Let signals and the name refresh run: poll blocks the only thread.
        await new Promise((r) => setTimeout(r, 0));
      }
    } finally {
      pm.maps.setMonitorLease(0n);
      rb.close();
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
    return 0;
  },
};
