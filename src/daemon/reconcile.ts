// Makes local_pods equal to the desired set with the fewest writes: unchanged entries are not
// rewritten (a rewrite is not atomic for readers of a hash map value), stale ones are deleted.
import { encodePodConfig } from "../maps/layouts.ts";
import type { DatapathMaps } from "../maps/manager.ts";
import type { PodPolicy } from "../mesh/types.ts";

export interface ReconcileResult {
  added: string[];
  updated: string[];
  removed: string[];
}

function same(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function reconcileLocalPods(maps: DatapathMaps, desired: Map<string, PodPolicy>): ReconcileResult {
  const res: ReconcileResult = { added: [], updated: [], removed: [] };
  for (const ip of maps.pods().keys()) {
    if (!desired.has(ip)) {
      maps.deletePod(ip);
      res.removed.push(ip);
    }
  }
  for (const [ip, policy] of desired) {
    const cur = maps.podBytes(ip);
    if (same(cur, encodePodConfig(policy))) continue;
    maps.putPod(ip, policy);
    (cur ? res.updated : res.added).push(ip);
  }
  return res;
}

/**
 * Gives every pod in `ips` a per-pod counter entry and removes the entries of pods gone, so that the
 * per-pod series on /metrics are exactly this node's meshed pods. Existing entries are kept (their
 * counts are the pod's history).
 */
export function reconcilePodCounters(maps: DatapathMaps, ips: Iterable<string>): ReconcileResult {
  const res: ReconcileResult = { added: [], updated: [], removed: [] };
  const want = new Set(ips);
  const have = new Set(maps.podCounterIps());
  for (const ip of have) {
    if (!want.has(ip)) {
      maps.deletePodCounters(ip);
      res.removed.push(ip);
    }
  }
  for (const ip of want) {
    if (!have.has(ip)) {
      maps.addPodCounters(ip);
      res.added.push(ip);
    }
  }
  return res;
}
