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
