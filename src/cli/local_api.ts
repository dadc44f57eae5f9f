// The CLI's side of the daemon's local API: the root-only unix socket the CNI plugin also uses. The
// network port serves only health and metrics, so pod data is read here.
import { callDaemon } from "../../cni/protocol.ts";
import { socketPath } from "../daemon/daemon.ts";
import type { PodEntry } from "../mesh/types.ts";

/** How connect4 knows a pod: by the daemon's netns scan, by its CNI attachment (mark and cookie). */
export interface PodIdentity {
  via: "netns" | "cni" | "mark";
  cookie: string | null;
  netns: string | null;
}

export type DaemonPod = PodEntry & { identity?: PodIdentity[] | null };

/** A question about the node rather than a pod: the per-container fields stay empty. */
function ask(runDir: string, op: "pods" | "status", timeoutMs: number) {
  return callDaemon(socketPath(runDir), {
    op,
    containerId: "",
    netns: "",
    ifName: "",
    podNamespace: "",
    podName: "",
    cniVersion: "1.0.0",
  }, timeoutMs);
}

/** The daemon's pod table (names, warnings, identity), or undefined when no daemon answers. */
export async function daemonPods(runDir: string, timeoutMs = 2_000): Promise<DaemonPod[] | undefined> {
  try {
    const res = await ask(runDir, "pods", timeoutMs);
    return res.pods as DaemonPod[] | undefined;
  } catch {
    return undefined;
  }
}

/** Whether a daemon answers on the socket under `runDir`. */
export async function daemonAnswers(runDir: string, timeoutMs = 500): Promise<boolean> {
  try {
    await ask(runDir, "status", timeoutMs);
    return true;
  } catch {
    return false;
  }
}
