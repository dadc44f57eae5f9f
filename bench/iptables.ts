// The iptables baseline's evidence: the pods running Istio's rules (testbed/istio_iptables.ts) pay for
// connection tracking, which the eBPF paths do not.
import { run } from "../testbed/mod.ts";

/** Conntrack entries in the namespace: evidence that the baseline paid for connection tracking. */
export async function conntrackCount(ns: string): Promise<number | undefined> {
  const r = await run("nsenter", [
    `--net=/run/netns/${ns}`,
    "--",
    "cat",
    "/proc/sys/net/netfilter/nf_conntrack_count",
  ], {
    allowFail: true,
  });
  const n = parseInt(r.stdout.trim(), 10);
  return Number.isFinite(n) ? n : undefined;
}
