// The contract between where pods come from (a YAML file, the Kubernetes API) and the daemon.
import type { Pod } from "kubernetes-types/core/v1.d.ts";

export type { Pod };

/** Counters a source exposes for /metrics and `merbridge status`. */
export interface PodSourceStats {
  /** Full (re)lists done, including the first. */
  lists: number;
  /** Watches (re)started after the first one (drops, 410 Expired, errors). */
  watchRestarts: number;
  /** Errors seen talking to the source (parse errors, HTTP errors). */
  errors: number;
  /** Unix ms of the last snapshot delivered, 0 if none. */
  lastSyncMs: number;
}

export interface PodSource {
  /** Human-readable origin, for logs ("file /x/pods.yaml", "kubernetes https://..."). */
  readonly description: string;
  /**
   * Starts delivering snapshots: `onSnapshot` receives the complete set of pods of this node each time
   * it changes. Resolves once the first snapshot was delivered; rejects if the first sync is impossible
   * (the caller decides whether to retry). Later errors are logged and retried with backoff while the last
   * good snapshot stays in force.
   */
  start(onSnapshot: (pods: Pod[]) => void): Promise<void>;
  /** Fetches one pod directly (the CNI ADD of a pod the cache has not seen yet). */
  get(namespace: string, name: string): Promise<Pod | undefined>;
  stats(): PodSourceStats;
  stop(): Promise<void>;
}

type Loose = Record<string, unknown>;

function pick(from: unknown, keys: readonly string[]): Loose | undefined {
  if (typeof from !== "object" || from === null || Array.isArray(from)) return from as Loose | undefined;
  const out: Loose = {};
  for (const k of keys) if ((from as Loose)[k] !== undefined) out[k] = (from as Loose)[k];
  return out;
}

function pickEach(from: unknown, keys: readonly string[]): unknown {
  return Array.isArray(from) ? from.map((x) => pick(x, keys)) : from;
}

/**
 * The part of a pod that membership, identity and policy read. Sources keep pods for as long as they
 * run, and an API pod carries far more (managedFields, the full container specs, conditions): kept
 * whole, a node's pods cost memory in proportion to everything in their specs. A field of the wrong
 * shape is kept as it came, so that decoding the pod reports it as it would have.
 */
export function slimPod(p: Pod): Pod {
  const spec = pick(p.spec, ["nodeName", "hostNetwork", "containers", "initContainers"]);
  if (spec && typeof spec === "object") {
    if (spec.containers !== undefined) spec.containers = pickEach(spec.containers, ["name"]);
    if (spec.initContainers !== undefined) {
      spec.initContainers = pickEach(spec.initContainers, ["name", "restartPolicy"]);
    }
  }
  const status = pick(p.status, ["phase", "podIP", "podIPs"]);
  if (status && typeof status === "object" && status.podIPs !== undefined) {
    status.podIPs = pickEach(status.podIPs, ["ip"]);
  }
  const out: Loose = {};
  if (p.kind !== undefined) out.kind = p.kind;
  const metadata = pick(p.metadata, ["name", "namespace", "uid", "resourceVersion", "labels", "annotations"]);
  if (metadata !== undefined) out.metadata = metadata;
  if (spec !== undefined) out.spec = spec;
  if (status !== undefined) out.status = status;
  return out as Pod;
}
