// Turns the samples into the published forms: a markdown report with ratios to the iptables baseline
// and a bar chart (plain SVG, written here, no plotting library).
import type { ControlResults } from "./control.ts";
import type { Sample, TestId } from "./dataplane.ts";
import { percentile, type Spread, spread } from "./stats.ts";
import { IN_PATHS, OUT_PATHS, PATH_LABELS } from "./topology.ts";
import { IN6_PATHS, OUT6_PATHS } from "./ipv6.ts";

export interface RunInfo {
  date: string;
  quick: boolean;
  kernel: string;
  cpuModel: string;
  cpus: number;
  pinnedCpu: number;
  commit: string;
  compiler: string;
  deno: string;
  reps: number;
  pingCount: number;
  bulkBytes: number;
  crrMax: number;
  crrSeconds: number;
  durationS: number;
  conntrack: Record<string, number | undefined>;
}

type Section = Sample["section"];

export interface Metric {
  id: string;
  label: string;
  unit: string;
  test: TestId;
  field: string;
  higherIsBetter: boolean;
  /** Where the value comes from when it is not a field of the client's result. */
  pick?: (s: Sample) => number;
}

export function metricsFor(section: Section, sizes: number[]): Metric[] {
  const rr: Metric[] = (section.endsWith("6") ? sizes.slice(0, 1) : sizes).flatMap((n) => {
    const size = n >= 1024 ? `${n / 1024} KiB` : `${n} B`;
    return [
      {
        id: `rr${n}_p50`,
        label: `RR ${size} p50`,
        unit: "µs",
        test: `rr${n}` as TestId,
        field: "p50_us",
        higherIsBetter: false,
      },
      {
        id: `rr${n}_p99`,
        label: `RR ${size} p99`,
        unit: "µs",
        test: `rr${n}` as TestId,
        field: "p99_us",
        higherIsBetter: false,
      },
    ];
  });
  const bulk: Metric[] = section.endsWith("6") ? [] : section === "outbound"
    ? [{
      id: "bulk_up",
      label: "bulk",
      unit: "Gbit/s",
      test: "bulk_up",
      field: "gbit_s",
      higherIsBetter: true,
    }, {
      id: "bulk_queue",
      label: "bulk: peak receive-queue memory in the client pod",
      unit: "MiB",
      test: "bulk_up",
      field: "",
      higherIsBetter: false,
      pick: (s) => (s.queues?.totalBytes ?? NaN) / 2 ** 20,
    }]
    : [
      {
        id: "bulk_up",
        label: "bulk to pod",
        unit: "Gbit/s",
        test: "bulk_up",
        field: "gbit_s",
        higherIsBetter: true,
      },
      {
        id: "bulk_down",
        label: "bulk from pod",
        unit: "Gbit/s",
        test: "bulk_down",
        field: "gbit_s",
        higherIsBetter: true,
      },
    ];
  return [
    ...rr,
    ...bulk,
    {
      id: "crr",
      label: "new connections",
      unit: "conn/s",
      test: "crr",
      field: "per_sec",
      higherIsBetter: true,
    },
    {
      id: "crr_p50",
      label: "connect+RR+close p50",
      unit: "µs",
      test: "crr",
      field: "p50_us",
      higherIsBetter: false,
    },
  ];
}

/** Per path, the spread over repetitions of one metric; paths with a failed sample get undefined. */
export function summarize(samples: Sample[], section: Section, m: Metric): Map<string, Spread | undefined> {
  const out = new Map<string, Spread | undefined>();
  const paths = new Set(samples.filter((s) => s.section === section).map((s) => s.path));
  for (const path of paths) {
    const mine = samples.filter((s) => s.section === section && s.path === path && s.test === m.test);
    if (mine.length === 0 || mine.some((s) => !s.ok)) {
      out.set(path, undefined);
      continue;
    }
    out.set(path, spread(mine.map((s) => m.pick ? m.pick(s) : Number(s.result?.[m.field]))));
  }
  return out;
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function ratio(v: number, base: number | undefined): string {
  if (base === undefined || !Number.isFinite(base) || base === 0) return "";
  return `${(v / base).toFixed(2)}×`;
}

function cell(s: Spread | undefined, base: Spread | undefined, failed: boolean): string {
  if (failed) return "**failed** (see results.json)";
  if (!s) return "not measured";
  return `${fmt(s.median)} <sub>${fmt(s.min)}–${fmt(s.max)}</sub> ${ratio(s.median, base?.median)}`.trim();
}

function pathFailed(samples: Sample[], section: Section, path: string, test: TestId): boolean {
  return samples.some((s) => s.section === section && s.path === path && s.test === test && !s.ok);
}

function dataTable(samples: Sample[], section: Section, paths: readonly string[], sizes: number[]): string[] {
  const present = paths.filter((p) => samples.some((s) => s.section === section && s.path === p));
  if (present.length === 0) return ["Not measured in this run."];
  const head = `| metric | ${
    present.map((p) => {
      const label = PATH_LABELS[p as keyof typeof PATH_LABELS] ?? p;
      return section.endsWith("6") ? label.replace("connect4", "connect6") : label;
    }).join(" | ")
  } |`;
  const rows = [head, `|---|${present.map(() => "---:").join("|")}|`];
  for (const m of metricsFor(section, sizes)) {
    const sum = summarize(samples, section, m);
    const base = sum.get("iptables");
    const better = m.higherIsBetter ? "higher is better" : "lower is better";
    rows.push(
      `| ${m.label} (${m.unit}, ${better}) | ${
        present.map((p) => cell(sum.get(p), base, pathFailed(samples, section, p, m.test))).join(" | ")
      } |`,
    );
  }
  // What the proxy hop itself costs, with the network floor taken out.
  for (const n of section.endsWith("6") ? [] : sizes) {
    const m = metricsFor(section, sizes).find((x) => x.id === `rr${n}_p50`)!;
    const sum = summarize(samples, section, m);
    const floor = sum.get("direct")?.median;
    const baseHop = floor !== undefined && sum.get("iptables")
      ? sum.get("iptables")!.median - floor
      : undefined;
    rows.push(`| ${m.label}: added over direct (µs) | ${
      present.map((p) => {
        const s = sum.get(p);
        if (p === "direct" || !s || floor === undefined) return p === "direct" ? "0" : "n/a";
        const hop = s.median - floor;
        return `${fmt(hop)} ${baseHop ? ratio(hop, baseHop) : ""}`.trim();
      }).join(" | ")
    } |`);
  }
  return rows;
}

function ms(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? "n/a" : `${fmt(v)} ms`;
}

function mib(kib: number | undefined): string {
  return kib === undefined || !Number.isFinite(kib) ? "n/a" : `${(kib / 1024).toFixed(1)} MiB`;
}

function p50p99(xs: number[] | undefined): string {
  if (!xs || xs.length === 0) return "n/a";
  return `${ms(percentile(xs, 50))} / ${ms(percentile(xs, 99))}`;
}

function controlTable(c: ControlResults): string[] {
  const rows = ["| measurement | p50 / p99 (or value) | compared with |", "|---|---:|---|"];
  if (c.cni) {
    const bridge = percentile(c.cni.addBridgeMs, 50);
    const chain = percentile(c.cni.addChainMs, 50);
    rows.push(
      `| CNI ADD, bridge + host-local alone (${c.cni.pods} pods) | ${p50p99(c.cni.addBridgeMs)} | baseline |`,
      `| CNI ADD, merbridge-cni step alone | ${p50p99(c.cni.addOursMs)} | ${
        c.cni.addDaemonMeanMs !== undefined
          ? `of which the daemon's handling ${c.cni.addDaemonMeanMs.toFixed(1)} ms (mean)`
          : ""
      } |`,
      `| CNI ADD, bridge + host-local + merbridge-cni chain | ${p50p99(c.cni.addChainMs)} | ${
        (chain / bridge).toFixed(2)
      }× the bridge plugin alone (p50) |`,
      `| CNI DEL, merbridge-cni step / bridge step | ${ms(percentile(c.cni.delOursMs, 50))} / ${
        ms(percentile(c.cni.delBridgeMs, 50))
      } (p50) | |`,
    );
  } else {
    rows.push("| CNI ADD | not measured (see errors) | |");
  }
  const d = c.daemon;
  if (d) {
    const r = spread(d.restartReadyMs);
    rows.push(
      `| daemon exec → ready, first start (CNI mode, no pins yet) | ${ms(d.firstReadyMs)} | |`,
      `| daemon exec → ready, restart with ${c.cni?.pods ?? "?"} pods attached | ${
        r ? `${ms(r.median)} (${fmt(r.min)}–${fmt(r.max)}, ${r.n} restarts)` : "n/a"
      } | |`,
      `| daemon exec → ready, sidecar mode, empty pods file | ${ms(d.sidecarReadyMs)} | |`,
      `| daemon RSS, idle | ${mib(d.rssIdleKiB)} | programs verified by this daemon |`,
      `| daemon RSS, ${d.manyPods} pods in the pods file | ${mib(d.rssManyKiB)} (peak ${
        mib(d.hwmManyKiB)
      }) | ${((d.rssManyKiB - d.rssIdleKiB) / 1024).toFixed(1)} MiB over idle |`,
      ...(d.rssIdleRestartKiB !== undefined && d.rssManyRestartKiB !== undefined
        ? [
          `| daemon exec → ready, sidecar mode, restart | ${ms(d.sidecarRestartReadyMs ?? NaN)} | |`,
          `| daemon RSS, idle, after a restart | ${
            mib(d.rssIdleRestartKiB)
          } | programs reopened from their pins |`,
          `| daemon RSS, ${d.manyPods} pods, after a restart | ${mib(d.rssManyRestartKiB)} | ${
            ((d.rssManyRestartKiB - d.rssIdleRestartKiB) / 1024).toFixed(1)
          } MiB over idle |`,
        ]
        : []),
      `| ${d.manyPods} pods written → all in local_pods | ${ms(d.manySyncMs)} | |`,
      `| one pod changed → its local_pods entry updated (${d.manyPods}-pod file) | ${
        p50p99(d.changeManyMs)
      } | from the file's rename into place to the entry in the kernel map |`,
      `| one pod changed → its local_pods entry updated (${d.fewPods}-pod file) | ${
        p50p99(d.changeFewMs)
      } | from the file's rename into place to the entry in the kernel map |`,
    );
  } else {
    rows.push("| daemon | not measured (see errors) | |");
  }
  const k = c.inCluster;
  if (k) {
    rows.push(
      `| in a cluster (pods from the API over TLS, service-account token): exec → ready, first start | ${
        ms(k.readyMs)
      } | no pods file, so no YAML parser |`,
      `| in a cluster: exec → ready, restart | ${ms(k.restartReadyMs)} | |`,
      `| in a cluster: daemon RSS, idle | ${mib(k.rssIdleKiB)} | programs verified by this daemon |`,
      `| in a cluster: daemon RSS, idle, after a restart | ${mib(k.rssIdleRestartKiB)} | programs reopened |`,
      `| in a cluster: daemon RSS, ${k.manyPods} pods | ${mib(k.rssManyKiB)} | ${
        ((k.rssManyKiB - k.rssIdleKiB) / 1024).toFixed(1)
      } MiB over idle |`,
      `| in a cluster: ${k.manyPods} pods created in the API → all in local_pods | ${ms(k.manySyncMs)} | |`,
      `| in a cluster: one pod's annotation changed in the API → its local_pods entry (${k.manyPods} pods) | ${
        p50p99(k.changeManyMs)
      } | through the watch |`,
    );
  }
  const id = c.identity;
  if (id) {
    rows.push(
      `| pod namespace with its IP → netns_pod_ips entry, without CNI mode (${id.pods} pods) | ${
        p50p99(id.latencyMs)
      } | the pod already in the pods file; \`ip addr add\` returned → entry seen |`,
      `| namespace scan, ${id.namespaces} pod namespaces (${id.candidates} listed with /proc), all known | ${
        p50p99(id.steadyScanMs)
      } | runs every second; enters no namespace |`,
      `| namespace scan, first (enters every namespace) | ${ms(id.coldScanMs)} | once per daemon start |`,
      `| namespace scan, a wanted IP nowhere, every namespace new | ${
        p50p99(id.missingScanMs)
      } | worst case, for the first 10 s of each namespace |`,
    );
  } else {
    rows.push("| pod identity | not measured (see errors) | |");
  }
  return rows;
}

export function markdown(
  info: RunInfo,
  samples: Sample[],
  control: ControlResults | undefined,
  sizes: number[],
): string {
  const failures = samples.filter((s) => !s.ok);
  const loops = samples.reduce((n, s) => n + (s.proxy?.loops ?? 0), 0);
  const lines = [
    "# Benchmark: eBPF interception vs. iptables REDIRECT",
    "",
    `Generated by \`deno task bench${
      info.quick ? " --quick" : ""
    }\` on ${info.date} (commit \`${info.commit}\`).`,
    `Linux ${info.kernel}, ${info.cpuModel}, ${info.cpus} vCPUs; every measured process pinned to CPU ${info.pinnedCpu}.`,
    `${info.reps} repetitions, path order rotated per repetition; ${
      info.pingCount.toLocaleString("en-US")
    } round trips`,
    `per latency run, ${
      (info.bulkBytes / 2 ** 20).toFixed(0)
    } MiB per bulk run, up to ${info.crrMax} connections`,
    `(${info.crrSeconds} s) per connection-rate run. Peers: C (bench/native, ${info.compiler}); ${info.deno}.`,
    `Whole run: ${info.durationS.toFixed(0)} s.`,
    "",
    "![bar chart](bench.svg)",
    "",
    "## How to read this",
    "",
    "- Each cell: median over the repetitions, then <sub>min–max over the repetitions</sub>, then the ratio",
    "  to the iptables column (below 1× is better for latencies, above 1× is better for throughput and rates).",
    "- Latency rows are one TCP connection doing request/response ping-pong (64 B or 1 KiB each way, echoed",
    "  and checked byte for byte); p50/p99 are over all round trips of one repetition.",
    '- "added over direct" subtracts the direct path\'s p50: what the interception and the proxy hop cost.',
    "- Every path (except direct) goes through the same C proxy (bench/native/fastproxy.c), which learns the",
    "  original destination with SO_ORIGINAL_DST: conntrack answers it for iptables, our getsockopt program",
    "  for eBPF. A run counts only if the client saw every byte intact, the proxy accepted exactly the",
    "  client's connections without errors, and the datapath's counters show the mechanism under test.",
    "- All processes share one CPU, so throughput and connection rates measure CPU cost per byte and per",
    "  connection of the whole path (client, kernel, proxy, server), not link speed.",
    "",
    "## Outbound: app → its sidecar → a server pod on the same node",
    "",
    ...dataTable(samples, "outbound", OUT_PATHS, sizes),
    "",
    "## Inbound: a client on another node → the pod's sidecar (inbound port) → the app",
    "",
    ...dataTable(samples, "inbound", IN_PATHS, sizes),
    "",
    "## IPv6: the same paths over native IPv6, dual-stack pods",
    "",
    "Istio's iptables and ip6tables rules (::1, ::6) against the same programs on IPv6 (the eBPF outbound",
    "column is connect6 redirecting to [::1]:15001); proxies and servers on [::], IPV6_V6ONLY off.",
    "",
    "Outbound (app → sidecar → server pod on the node):",
    "",
    ...dataTable(samples, "outbound6", OUT6_PATHS, sizes),
    "",
    "Inbound (client on another node → sidecar → app):",
    "",
    ...dataTable(samples, "inbound6", IN6_PATHS, sizes),
    "",
    "## Control plane",
    "",
    ...(control ? controlTable(control) : ["Not measured in this run."]),
    "",
    "## Caveats",
    "",
    "- Loopback and veth only: no NIC, no real network latency; the numbers isolate per-packet and",
    "  per-connection CPU cost. On 2 vCPUs with other work on the machine, the min–max ranges are part of",
    "  the result: differences inside them are not meaningful.",
    "- The proxy is a minimal epoll forwarder, far cheaper than Envoy: the interception's share of a",
    "  real sidecar's latency is smaller than here, and the absolute savings are what carries over.",
    "- The eBPF paths pay for CNI-mode pod identity (mark listener lookup, bpf_bind to the pod IP) on",
    "  every connect, as in production.",
    "- Attaching XDP to a veth in native mode turns GSO off on its host-side peer, so every segment",
    '  into the pod arrives MTU-sized ("bulk to pod", path "native mode"); the default on a veth is',
    "  generic mode, which runs on the skb and keeps GSO. Turning tx checksum",
    "  offload off on the pod interface (the default) also turns off TSO for the pod's own sends",
    '  ("bulk from pod"), for the TC hook as well, although TC\'s checksum update is right either way.',
    '  `--hardware-checksum` keeps offload on (path "hw checksum").',
    "- sk_msg puts the app's bytes straight into the proxy socket's queue, whatever its receive buffer;",
    "  the program moves the app's socket to plain TCP once that queue holds more than the buffer (at",
    '  least 4 MiB), so an app faster than its proxy is held back by the TCP window (row "peak',
    '  receive-queue memory", sampled with `ss -tm` every 50 ms); bulk runs mostly measure that TCP path.',
    "- The inbound proxy reaches the app as Envoy does since Istio 1.10, on every path: it connects to the",
    "  pod's own IP and port from source 127.0.0.6, which istio-iptables exempts and connect4 must leave",
    "  alone. A hop captured again would come back to the proxy's inbound port; the proxies count such",
    `  loops and any fails the run: ${loops} counted in this run.`,
    "- The daemon and the CNI plugin run from source through `deno run` (no `deno compile` here), so",
    "  their start-up time includes loading the TypeScript modules, which a compiled binary does not (not measured here).",
    `- Conntrack entries at the end of the data-plane runs: ${
      Object.entries(info.conntrack).map(([k, v]) => `${k}: ${v ?? "n/a"}`).join(", ")
    }. Without netfilter rules a namespace does not track connections at all.`,
    "",
  ];
  if (failures.length || control?.errors.length) {
    lines.push("## Failures", "");
    for (const f of failures) lines.push(`- ${f.section} ${f.path} ${f.test} rep ${f.rep}: ${f.error}`);
    for (const e of control?.errors ?? []) lines.push(`- control plane: ${e}`);
    lines.push("");
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------
// SVG

const COLORS: Record<string, string> = {
  direct: "#9e9e9e",
  iptables: "#e69f00",
  ebpf: "#56b4e9",
  ebpf_monitor: "#8ecae6",
  ebpf_fast: "#0072b2",
  xdp: "#009e73",
  xdp_hwcsum: "#7fc97f",
  tc: "#cc79a7",
  tc_hwcsum: "#f0a3d0",
};

/** Bar labels in the chart; the legend under it gives the full names. */
const SHORT: Record<string, string> = {
  direct: "direct",
  iptables: "iptables",
  ebpf: "eBPF",
  ebpf_monitor: "eBPF+monitor",
  ebpf_fast: "eBPF+sockmap",
  xdp: "XDP",
  xdp_hwcsum: "XDP, hw csum",
  tc: "TC",
  tc_hwcsum: "TC, hw csum",
};

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

interface Panel {
  title: string;
  bars: { path: string; s?: Spread; failed: boolean }[];
  higherIsBetter: boolean;
  unit: string;
}

function panels(samples: Sample[], sizes: number[]): Panel[] {
  const out: Panel[] = [];
  const pick: [Section, string, string][] = [
    ["outbound", `rr${sizes[0]}_p50`, "Outbound"],
    ["outbound", `rr${sizes.at(-1)}_p50`, "Outbound"],
    ["outbound", "bulk_up", "Outbound"],
    ["outbound", "crr", "Outbound"],
    ["inbound", `rr${sizes[0]}_p50`, "Inbound"],
    ["inbound", `rr${sizes.at(-1)}_p50`, "Inbound"],
    ["inbound", "bulk_up", "Inbound"],
    ["inbound", "bulk_down", "Inbound"],
    ["inbound", "crr", "Inbound"],
  ];
  for (const [section, id, prefix] of pick) {
    const m = metricsFor(section, sizes).find((x) => x.id === id);
    if (!m) continue;
    const sum = summarize(samples, section, m);
    if (sum.size === 0) continue;
    const order = (section === "outbound" ? OUT_PATHS : IN_PATHS) as readonly string[];
    out.push({
      title: `${prefix}: ${m.label} (${m.unit}, ${m.higherIsBetter ? "higher" : "lower"} is better)`,
      unit: m.unit,
      higherIsBetter: m.higherIsBetter,
      bars: order.filter((p) => sum.has(p)).map((p) => ({
        path: p,
        s: sum.get(p),
        failed: pathFailed(samples, section, p, m.test),
      })),
    });
  }
  return out;
}

export function svg(samples: Sample[], sizes: number[]): string {
  const ps = panels(samples, sizes);
  const cols = 3, pw = 400, labelW = 90, barMax = pw - labelW - 110, barH = 16, gap = 6, titleH = 34;
  const ph = titleH + 5 * (barH + gap) + 14;
  const rowsN = Math.ceil(ps.length / cols);
  const legendH = 40;
  const W = cols * pw + 20, H = rowsN * ph + legendH + 40;
  const o: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">eBPF interception vs. iptables REDIRECT (median of repetitions, whiskers: min–max, ratio to iptables)</text>`,
  ];
  ps.forEach((p, i) => {
    const x0 = 10 + (i % cols) * pw, y0 = 40 + Math.floor(i / cols) * ph;
    o.push(`<text x="${x0}" y="${y0 + 14}" font-weight="bold">${esc(p.title)}</text>`);
    const max = Math.max(...p.bars.map((b) => b.s?.max ?? 0), 1e-9);
    const base = p.bars.find((b) => b.path === "iptables")?.s?.median;
    p.bars.forEach((b, j) => {
      const y = y0 + titleH - 10 + j * (barH + gap);
      o.push(
        `<text x="${x0}" y="${y + barH - 4}">${esc(SHORT[b.path] ?? b.path)}</text>`,
      );
      const bx = x0 + labelW;
      if (!b.s) {
        o.push(
          `<text x="${bx}" y="${y + barH - 4}" fill="#c00">${b.failed ? "failed" : "not measured"}</text>`,
        );
        return;
      }
      const w = (v: number) => Math.max(1, (v / max) * barMax);
      o.push(
        `<rect x="${bx}" y="${y}" width="${w(b.s.median).toFixed(1)}" height="${barH}" fill="${
          COLORS[b.path] ?? "#666"
        }"/>`,
      );
      const wy = y + barH / 2;
      o.push(
        `<line x1="${(bx + w(b.s.min)).toFixed(1)}" x2="${
          (bx + w(b.s.max)).toFixed(1)
        }" y1="${wy}" y2="${wy}" stroke="#222" stroke-width="1"/>`,
        `<line x1="${(bx + w(b.s.min)).toFixed(1)}" x2="${(bx + w(b.s.min)).toFixed(1)}" y1="${wy - 4}" y2="${
          wy + 4
        }" stroke="#222"/>`,
        `<line x1="${(bx + w(b.s.max)).toFixed(1)}" x2="${(bx + w(b.s.max)).toFixed(1)}" y1="${wy - 4}" y2="${
          wy + 4
        }" stroke="#222"/>`,
      );
      const r = base ? ` ${(b.s.median / base).toFixed(2)}×` : "";
      o.push(
        `<text x="${(bx + w(b.s.max) + 4).toFixed(1)}" y="${y + barH - 4}">${
          esc(fmt(b.s.median) + r)
        }</text>`,
      );
    });
  });
  let ly = H - legendH - 4;
  let lx = 10;
  for (const [path, color] of Object.entries(COLORS)) {
    const label = PATH_LABELS[path as keyof typeof PATH_LABELS] ?? path;
    const width = 30 + label.length * 6.4;
    if (lx + width > W - 10) {
      lx = 10;
      ly += 18;
    }
    o.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${color}"/>`);
    o.push(`<text x="${lx + 16}" y="${ly + 10}">${esc(label)}</text>`);
    lx += width;
  }
  o.push("</svg>", "");
  return o.join("\n");
}
