// `deno task demo`: builds a small node out of namespaces, runs the real daemon in CNI mode on it,
// pushes real TCP through every path the design distinguishes, shows the node's state, and takes it
// all down again. Exits 0 only if every connection behaved as designed and nothing was left behind.
import { abortOnSignals, Scope } from "../testbed/mod.ts";
import { buildNode, EXCLUDED_IN_PORT, EXCLUDED_OUT_PORT, type Track } from "./node.ts";
import { bpfFootprint, checkNodeClean } from "./residue.ts";
import { showCounters, showStatus } from "./status.ts";
import { runTraffic } from "./traffic.ts";
import { showDecisions, watchDecisions } from "./monitor.ts";
import { bold, green, Ledger, red } from "./ui.ts";

async function main(): Promise<number> {
  if (Deno.uid() !== 0) {
    console.error("the demo creates namespaces and loads eBPF programs: run it as root");
    return 2;
  }
  const started = performance.now();
  const ui = new Ledger();
  ui.header([
    "merbridge demo: a node made of network namespaces, the real daemon in CNI mode, real TCP",
    `  pod-a  meshed, annotated excludeOutboundPorts "${EXCLUDED_OUT_PORT}", ` +
    `excludeInboundPorts "${EXCLUDED_IN_PORT}"`,
    "  pod-b  meshed, no annotations",
    "  plain  outside the mesh, no sidecar",
    "  and a second node one forwarding hop away; the sidecars are test proxies standing in for Envoy",
  ]);

  // Ctrl-C must still take the node down: the flow stops at the next step boundary and the scope
  // unwinds as it would after a failure.
  const stop = new AbortController();
  const signals = abortOnSignals(stop, (sig) => console.log(`\n${sig}: stopping and cleaning up`));

  const track: Track = {};
  const scope = new Scope();
  try {
    ui.section("Building the node");
    const node = await buildNode(scope, ui, stop.signal, track);
    ui.section("Traffic, one line per connection");
    const watch = await watchDecisions(scope, node);
    await runTraffic(node, ui, stop.signal);
    const decisions = await watch.stop();
    stop.signal.throwIfAborted();
    ui.section("What the programs decided, and why (merbridge monitor during the traffic)");
    showDecisions(node, ui, decisions);
    ui.section("Datapath counters (all CPUs)");
    showCounters(node, ui);
    ui.section("Node status (merbridge status, checked against each pod's sockets)");
    await showStatus(node, ui);
  } catch (e) {
    ui.fail(stop.signal.aborted ? "interrupted" : "the demo stopped early", (e as Error).message);
  } finally {
    // Taken before teardown: afterwards there is nothing left to identify our programs by.
    let bpf = { mapIds: [] as number[], progIds: [] as number[] };
    if (track.pinPath) bpf = await bpfFootprint(track.pinPath).catch(() => bpf);
    ui.section("Cleaning up");
    await scope[Symbol.asyncDispose]();
    for (const e of scope.errors) ui.fail("cleanup step", (e as Error).message ?? String(e));
    if (track.prefix && track.dir && track.pinPath) {
      await checkNodeClean(ui, {
        prefix: track.prefix,
        dir: track.dir,
        pinPath: track.pinPath,
        daemonPid: track.daemonPid ?? 0,
        ...bpf,
      });
    }
    signals[Symbol.dispose]();
  }

  const secs = ((performance.now() - started) / 1000).toFixed(1);
  console.log("");
  if (ui.failures.length === 0) {
    console.log(bold(green(`✓ all ${ui.passed} checks passed in ${secs} s`)));
    return 0;
  }
  const total = ui.passed + ui.failures.length;
  console.log(bold(red(`✗ ${ui.failures.length} of ${total} checks failed (${secs} s):`)));
  for (const f of ui.failures) console.log(red(`    ${f}`));
  return 1;
}

Deno.exit(await main());
