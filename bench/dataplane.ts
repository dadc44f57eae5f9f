// Data-plane measurements: request/response latency, bulk throughput and connection rate through
// each path, repetition after repetition with the path order rotated, so slow drift of the machine
// (other work on it) spreads over all paths instead of favouring the ones measured first.
//
// Every measurement must also prove it took its path: the client checks every byte, the proxy must
// have accepted exactly the connections the client made with a working SO_ORIGINAL_DST, and the
// datapath's own counters must show the mechanism under test (connect4 redirects, sk_msg redirects
// or their absence, ingress rewrites). A measurement that fails any of these fails the run.
import type { CounterName } from "../src/maps/layouts.ts";
import type { Datapath } from "../src/datapath/datapath.ts";
import type { NativeTools } from "./native.ts";
import { type Pinning, type ProxyStats, proxyStats, runPinned } from "./procs.ts";
import { BULK_PORT, ECHO_PORT, type PathEnd } from "./topology.ts";
import { type QueuePeak, sampleQueues } from "../testbed/mod.ts";

export interface DataplaneConfig {
  reps: number;
  sizes: number[];
  pingCount: number;
  pingWarmup: number;
  bulkBytes: number;
  crrSeconds: number;
  crrMax: number;
  timeoutMs: number;
}

export type TestId = `rr${number}` | "bulk_up" | "bulk_down" | "crr";

export interface Sample {
  /** outbound6 and inbound6: the same paths over native IPv6 (ipv6.ts). */
  section: "outbound" | "inbound" | "outbound6" | "inbound6";
  rep: number;
  path: string;
  test: TestId;
  ok: boolean;
  error?: string;
  result?: Record<string, unknown>;
  proxy?: Partial<ProxyStats>;
  counters?: Partial<Record<CounterName, number>>;
  queues?: QueuePeak;
}

type Counters = Record<CounterName, bigint>;

function counterDelta(dp: Datapath, before: Counters): Partial<Record<CounterName, number>> {
  const after = dp.maps.counters();
  const out: Partial<Record<CounterName, number>> = {};
  for (const k of Object.keys(after) as CounterName[]) {
    const d = Number(after[k] - before[k]);
    if (d !== 0) out[k] = d;
  }
  return out;
}

function proxyDelta(a: ProxyStats, b: ProxyStats): ProxyStats {
  return {
    accepted: b.accepted - a.accepted,
    origdst_errors: b.origdst_errors - a.origdst_errors,
    upstream_errors: b.upstream_errors - a.upstream_errors,
    loops: b.loops - a.loops,
  };
}

function loopError(p: Partial<ProxyStats>): string {
  return `${p.loops} capture loop(s): the proxy's inbound hop (to the pod IP from 127.0.0.6) came back ` +
    `to its inbound port (${JSON.stringify(p)})`;
}

/** Why a finished measurement does not prove its path, or undefined when it does. */
function verify(end: PathEnd, conns: number, s: Sample): string | undefined {
  const p = s.proxy as ProxyStats | undefined;
  const c = s.counters ?? {};
  if (end.proxy) {
    if (!p) return "no proxy counters";
    if (p.loops) return loopError(p);
    if (p.accepted !== conns) return `proxy accepted ${p.accepted} connections, the client made ${conns}`;
    if (p.origdst_errors || p.upstream_errors) return `proxy errors ${JSON.stringify(p)}`;
  }
  switch (end.expect) {
    case "connect":
      if (c.connect_redirect !== conns) return `connect_redirect ${c.connect_redirect ?? 0} != ${conns}`;
      if (c.msg_redirect || c.sockmap_add) return `fast path used while switched off: ${JSON.stringify(c)}`;
      break;
    case "connect_fast":
      if (c.connect_redirect !== conns) return `connect_redirect ${c.connect_redirect ?? 0} != ${conns}`;
      if (!c.msg_redirect) return "no sk_msg redirects on the fast path";
      break;
    case "ingress":
      if (!c.ingress_redirect || !c.egress_restore) return `no ingress rewrites: ${JSON.stringify(c)}`;
      break;
  }
  return undefined;
}

export async function measure(
  pin: Pinning,
  tools: NativeTools,
  cfg: DataplaneConfig,
  section: Sample["section"],
  rep: number,
  end: PathEnd,
  test: TestId,
): Promise<Sample> {
  const s: Sample = { section, rep, path: end.id, test, ok: false };
  let args: string[];
  if (test.startsWith("rr")) {
    args = [
      "pingpong",
      `${end.serverIp}:${ECHO_PORT}`,
      "--size",
      test.slice(2),
      "--count",
      String(cfg.pingCount),
      "--warmup",
      String(cfg.pingWarmup),
    ];
  } else if (test === "crr") {
    args = [
      "crr",
      `${end.serverIp}:${ECHO_PORT}`,
      "--size",
      "64",
      "--seconds",
      String(cfg.crrSeconds),
      "--max",
      String(cfg.crrMax),
    ];
  } else {
    args = [
      "bulk",
      `${end.serverIp}:${BULK_PORT}`,
      "--bytes",
      String(cfg.bulkBytes),
      "--dir",
      test === "bulk_up" ? "up" : "down",
    ];
  }
  try {
    const p0 = end.proxy ? await proxyStats(end.proxy) : undefined;
    const c0 = end.dp?.maps.counters();
    const sampler = section === "outbound" && test.startsWith("bulk") && end.client.netns
      ? sampleQueues(end.client.netns, 50)
      : undefined;
    await end.during?.start();
    try {
      s.result = await runPinned(pin, tools.loadgen, args, end.client, cfg.timeoutMs);
    } finally {
      if (sampler) s.queues = await sampler.stop();
      await end.during?.stop();
    }
    if (end.dp && c0) s.counters = counterDelta(end.dp, c0);
    if (end.proxy && p0) s.proxy = proxyDelta(p0, await proxyStats(end.proxy));
    if (s.proxy?.loops) {
      // Named before the client's failure, which a loop causes (the proxy closes the looped hop).
      s.error = loopError(s.proxy);
    } else if (s.result.ok !== true) {
      s.error = `client: ${JSON.stringify(s.result)}`;
    } else {
      const conns = test === "crr" ? Number(s.result.conns) + Number(s.result.errors) : 1;
      s.error = verify(end, conns, s);
    }
  } catch (e) {
    s.error = (e as Error).message;
  }
  s.ok = !s.error;
  return s;
}

export function testsFor(section: Sample["section"], cfg: DataplaneConfig): TestId[] {
  const rr = cfg.sizes.map((n) => `rr${n}` as TestId);
  // IPv6: the smallest request/response and the connection rate, where interception costs show.
  if (section.endsWith("6")) return [rr[0]!, "crr"];
  return section === "outbound" ? [...rr, "bulk_up", "crr"] : [...rr, "bulk_up", "bulk_down", "crr"];
}

/** All paths of a section, `reps` times, rotating which path goes first. */
export async function runSection(
  pin: Pinning,
  tools: NativeTools,
  cfg: DataplaneConfig,
  section: Sample["section"],
  ends: PathEnd[],
  progress: (s: Sample) => void,
  signal?: AbortSignal,
): Promise<Sample[]> {
  const out: Sample[] = [];
  const tests = testsFor(section, cfg);
  for (let rep = 0; rep < cfg.reps; rep++) {
    const order = ends.map((_, i) => ends[(i + rep) % ends.length]!);
    for (const test of tests) {
      for (const end of order) {
        signal?.throwIfAborted();
        const s = await measure(pin, tools, cfg, section, rep, end, test);
        out.push(s);
        progress(s);
      }
    }
  }
  return out;
}
