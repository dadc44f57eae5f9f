// `deno task bench`: the eBPF datapath against Istio-style iptables REDIRECT, side by side in one run,
// on namespaces the benchmark builds and removes itself.
//
//   deno task bench                full run (about 5 minutes): docs/bench.md, docs/bench.svg, bench/results.json
//   deno task bench --quick        short run, written under bench/results/tmp/ unless --out is given
//   options: --reps N  --cpu N (the CPU every measured process is pinned to)  --only outbound,inbound,ipv6,control
//            --bulk-mib N (bytes per bulk run)
//            --out DIR (write bench.md, bench.svg and results.json there)
//
// Exits non-zero when any path failed to carry its traffic intact (or left something behind); speed
// itself never fails the run.
import { parseArgs } from "node:util";
import { abortOnSignals, ROOT, Scope, sweepStale } from "../testbed/mod.ts";
import { type ControlConfig, type ControlResults, runControl } from "./control.ts";
import { type DataplaneConfig, runSection, type Sample } from "./dataplane.ts";
import { conntrackCount } from "./iptables.ts";
import { buildNative } from "./native.ts";
import type { Pinning } from "./procs.ts";
import { markdown, type RunInfo, svg } from "./report.ts";
import { buildDataplane, IN_PATHS, OUT_PATHS } from "./topology.ts";
import { buildIpv6Paths, IN6_PATHS, OUT6_PATHS } from "./ipv6.ts";

const SECTIONS = ["outbound", "inbound", "ipv6", "control"] as const;
type SectionName = typeof SECTIONS[number];

const { values: flags } = parseArgs({
  args: Deno.args,
  strict: true,
  options: {
    quick: { type: "boolean", default: false },
    reps: { type: "string" },
    cpu: { type: "string", default: "1" },
    only: { type: "string" },
    out: { type: "string" },
    "bulk-mib": { type: "string" },
  },
});

function log(msg: string) {
  console.error(`bench: ${msg}`);
}

function textOf(cmd: string, args: string[]): string {
  try {
    const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).outputSync();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "";
  }
}

function cpuModel(): string {
  const m = /^model name\s*:\s*(.+)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"));
  return m?.[1]?.trim() ?? "unknown CPU";
}

function onlineCpus(): number[] {
  const text = Deno.readTextFileSync("/sys/devices/system/cpu/online").trim();
  return text.split(",").flatMap((r) => {
    const [a, b] = r.split("-").map(Number);
    return b === undefined ? [a!] : Array.from({ length: b - a! + 1 }, (_, i) => a! + i);
  });
}

/** Keeps this orchestrator (and the helpers it runs unpinned: ip, nsenter, iptables) off the measured CPU. */
function moveSelfOff(cpu: number, cpus: number[]) {
  const others = cpus.filter((c) => c !== cpu);
  if (others.length === 0) return;
  textOf("taskset", ["-a", "-p", "-c", others.join(","), String(Deno.pid)]);
}

function summaryLine(s: Sample): string {
  const r = s.result ?? {};
  const what = s.test.startsWith("rr") || s.test === "crr"
    ? (s.test === "crr"
      ? `${r.per_sec} conn/s, p50 ${r.p50_us} µs`
      : `p50 ${r.p50_us} µs, p99 ${r.p99_us} µs`)
    : `${r.gbit_s} Gbit/s`;
  return `${s.section} rep ${s.rep + 1} ${s.path} ${s.test}: ${s.ok ? what : `FAILED: ${s.error}`}`;
}

async function main(): Promise<number> {
  if (Deno.uid() !== 0) {
    log("needs root (namespaces, cgroups, BPF)");
    return 2;
  }
  const quick = flags.quick ?? false;
  const only = new Set<SectionName>(
    flags.only ? flags.only.split(",").map((s) => s.trim() as SectionName) : SECTIONS,
  );
  for (const s of only) if (!SECTIONS.includes(s)) throw new Error(`unknown section ${s}`);
  const cpus = onlineCpus();
  const pin: Pinning = { cpu: Number(flags.cpu) };
  if (!cpus.includes(pin.cpu)) throw new Error(`CPU ${pin.cpu} is not online (online: ${cpus.join(",")})`);
  moveSelfOff(pin.cpu, cpus);

  const dp: DataplaneConfig = quick
    ? {
      reps: 2,
      sizes: [64, 1024],
      pingCount: 3000,
      pingWarmup: 300,
      bulkBytes: 128 * 2 ** 20,
      crrSeconds: 0.5,
      crrMax: 800,
      timeoutMs: 60_000,
    }
    : {
      reps: 5,
      sizes: [64, 1024],
      pingCount: 20_000,
      pingWarmup: 2_000,
      bulkBytes: 2 ** 30,
      crrSeconds: 2,
      crrMax: 4_000,
      timeoutMs: 120_000,
    };
  if (flags.reps) dp.reps = Math.max(1, Number(flags.reps));
  if (flags["bulk-mib"]) dp.bulkBytes = Math.max(1, Number(flags["bulk-mib"])) * 2 ** 20;
  const cp: ControlConfig = quick
    ? {
      cniPods: 8,
      restarts: 1,
      manyPods: 1000,
      changes: 5,
      settleMs: 1000,
      identityPods: 10,
      scanNamespaces: 50,
    }
    : {
      cniPods: 30,
      restarts: 3,
      manyPods: 1000,
      changes: 20,
      settleMs: 3000,
      identityPods: 30,
      scanNamespaces: 300,
    };

  for (const r of sweepStale()) log(`removed the leftover of an interrupted run: ${r}`);
  // Ctrl-C or SIGTERM stops at the next measurement and unwinds the scopes as a failure would, so the
  // namespaces, rules, pins and cgroups still go.
  const stop = new AbortController();
  const signals = abortOnSignals(
    stop,
    (sig) => log(`${sig}: stopping after the current measurement and cleaning up`),
  );

  const t0 = performance.now();
  const samples: Sample[] = [];
  const problems: string[] = [];
  const conntrack: Record<string, number | undefined> = {};
  let control: ControlResults | undefined;
  let compiler = "";

  {
    const scope = new Scope();
    try {
      const tools = await buildNative(scope);
      compiler = tools.compiler;
      log(`peers built with ${compiler}; measured processes pinned to CPU ${pin.cpu}`);
      if (only.has("outbound") || only.has("inbound") || only.has("ipv6")) {
        const world = new Scope();
        try {
          const w = await buildDataplane(world, tools, pin);
          log("data-plane namespaces, datapaths, proxies and servers up");
          if (only.has("outbound")) {
            const ends = OUT_PATHS.map((p) => w.outbound[p]);
            samples.push(
              ...await runSection(pin, tools, dp, "outbound", ends, (s) => log(summaryLine(s)), stop.signal),
            );
          }
          if (only.has("inbound")) {
            const ends = IN_PATHS.map((p) => w.inbound[p]);
            samples.push(
              ...await runSection(pin, tools, dp, "inbound", ends, (s) => log(summaryLine(s)), stop.signal),
            );
          }
          if (only.has("ipv6")) {
            const six = await buildIpv6Paths(world, tools, pin, w);
            log("IPv6 pods, proxies and servers up");
            for (
              const [section, ends] of [
                ["outbound6", OUT6_PATHS.map((p) => six.outbound[p])],
                ["inbound6", IN6_PATHS.map((p) => six.inbound[p])],
              ] as const
            ) {
              samples.push(
                ...await runSection(pin, tools, dp, section, ends, (s) => log(summaryLine(s)), stop.signal),
              );
            }
          }
          for (const [label, ns] of Object.entries(w.conntrackProbes)) {
            conntrack[label] = await conntrackCount(ns);
          }
        } catch (e) {
          problems.push(`data plane: ${(e as Error).stack ?? e}`);
        } finally {
          await world[Symbol.asyncDispose]();
          problems.push(...world.errors.map((e) => `data-plane cleanup: ${e}`));
        }
      }
      if (only.has("control")) {
        stop.signal.throwIfAborted();
        log("control plane: CNI chain and daemon");
        control = await runControl(pin, cp, stop.signal);
        problems.push(...control.errors.map((e) => `control plane: ${e}`));
      }
    } catch (e) {
      problems.push(`${(e as Error).stack ?? e}`);
    } finally {
      await scope[Symbol.asyncDispose]();
      problems.push(...scope.errors.map((e) => `cleanup: ${e}`));
      signals[Symbol.dispose]();
    }
  }
  if (stop.signal.aborted) {
    log("interrupted: cleaned up, no report written");
    return 130;
  }

  const dirty = textOf("git", ["-C", ROOT, "status", "--porcelain", "--untracked-files=no"]) !== "";
  const info: RunInfo = {
    date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    quick,
    kernel: Deno.osRelease(),
    cpuModel: cpuModel(),
    cpus: cpus.length,
    pinnedCpu: pin.cpu,
    commit: textOf("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]) + (dirty ? " + local changes" : ""),
    compiler,
    deno: `Deno ${Deno.version.deno}`,
    reps: dp.reps,
    pingCount: dp.pingCount,
    bulkBytes: dp.bulkBytes,
    crrMax: dp.crrMax,
    crrSeconds: dp.crrSeconds,
    durationS: (performance.now() - t0) / 1000,
    conntrack,
  };
  const md = markdown(info, samples, control, dp.sizes);
  const chart = svg(samples, dp.sizes);
  const results = {
    info,
    config: { dataplane: dp, control: cp },
    samples,
    control: control ?? null,
    problems,
  };

  const outDir = flags.out ?? (quick ? `${ROOT}bench/results/tmp` : undefined);
  const paths = outDir
    ? { md: `${outDir}/bench.md`, svg: `${outDir}/bench.svg`, json: `${outDir}/results.json` }
    : { md: `${ROOT}docs/bench.md`, svg: `${ROOT}docs/bench.svg`, json: `${ROOT}bench/results.json` };
  if (outDir) await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(paths.md, md);
  await Deno.writeTextFile(paths.svg, chart);
  await Deno.writeTextFile(paths.json, JSON.stringify(results, null, 1) + "\n");

  console.log(md);
  log(`wrote ${paths.md}, ${paths.svg}, ${paths.json} in ${info.durationS.toFixed(0)} s`);
  const failed = samples.filter((s) => !s.ok);
  if (failed.length || problems.length) {
    for (const f of failed) log(`FAILED ${f.section} ${f.path} ${f.test} rep ${f.rep + 1}: ${f.error}`);
    for (const p of problems) log(`FAILED ${p}`);
    return 1;
  }
  return 0;
}

Deno.exit(await main());
