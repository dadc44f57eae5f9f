// `merbridge monitor` watching the demo's traffic: what the programs decided for each connection and
// why, as an operator would see it, checked against what the traffic section proved happened.
import { type Scope, startMonitor } from "../testbed/mod.ts";
import type { DemoNode } from "./node.ts";
import { equal, holds, type Ledger } from "./ui.ts";

export interface Watch {
  stop(): Promise<Record<string, unknown>[]>;
}

/** Starts the monitor and returns once it holds the lease (the programs then send events). */
export async function watchDecisions(scope: Scope, node: DemoNode): Promise<Watch> {
  const p = await startMonitor(scope, {
    pinPath: node.pinPath,
    runDir: node.runDir,
    args: [`--state-dir=${node.stateDir}`],
  });
  return {
    async stop() {
      // Its lines come through a pipe: a moment for the last events to arrive.
      await new Promise((r) => setTimeout(r, 300));
      p.kill("SIGTERM");
      await p.done;
      return p.lines;
    },
  };
}

function line(e: Record<string, unknown>): string {
  const path = e.src ? `${e.src} -> ${e.dst}` : `-> ${e.dst}`;
  const orig = e.orig && e.kind !== "ingress" ? ` (original ${e.orig})` : "";
  return `${String(e.kind).padEnd(8)} ${String(e.pod).padEnd(13)} ${path}${orig}: ${e.why}`;
}

export function showDecisions(node: DemoNode, ui: Ledger, events: Record<string, unknown>[]): void {
  const a = node.pods.a, b = node.pods.b;
  const has = (kind: string, reason: string, pod?: string) =>
    events.some((e) => e.kind === kind && e.reason === reason && (pod === undefined || e.podIp === pod));
  const lost = events.filter((e) => "lost" in e);
  const shown = events.filter((e) => e.kind === "connect" || e.kind === "ingress" || e.kind === "origdst");
  ui.check(
    `merbridge monitor saw ${events.length} decisions during the traffic, each with the rule that decided`,
    [
      holds(
        "pod-a's app redirected to its sidecar (its rules include it)",
        has("connect", "redirect", a.ip),
        "yes",
        "no",
      ),
      holds(
        "pod-a's excluded outbound port left alone by its rules",
        has("connect", "pass_excluded_port", a.ip),
        "yes",
        "no",
      ),
      holds(
        "the sidecar's hop to a same-node meshed pod sent inbound",
        has("connect", "inbound_local_pod"),
        "yes",
        "no",
      ),
      holds("an inbound SYN from the other node rewritten", has("ingress", "in_rewrite", b.ip), "yes", "no"),
      holds(
        "pod-a's excluded inbound port left alone",
        has("ingress", "in_excluded_port", a.ip),
        "yes",
        "no",
      ),
      holds(
        "the sidecars' hop to their app from 127.0.0.6 left alone",
        has("connect", "pass_passthrough"),
        "yes",
        "no",
      ),
      holds("the sidecars' SO_ORIGINAL_DST answered", has("origdst", "origdst_hit"), "yes", "no"),
      equal("events lost", 0, lost.length),
    ],
    shown.slice(0, 14).map(line),
  );
}
