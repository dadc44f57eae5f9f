// The Kubernetes pod source as the daemon's flags describe it: a kubeconfig when one is given, the
// pod's own service account otherwise.
import { getLogger } from "../log/logger.ts";
import type { PodSource } from "../pods/source.ts";
import { inClusterConnection, type KubeConnection } from "./config.ts";
import { KubePodSource } from "./pod_source.ts";

const log = getLogger("kube");

export interface OpenKubeOptions {
  /** Path of a kubeconfig; in-cluster settings when absent. */
  kubeconfig?: string;
  /** Context of the kubeconfig to use instead of its current-context. */
  context?: string;
  /** The in-cluster service account's mount; default the standard one. */
  serviceAccountDir?: string;
  nodeName: string;
}

/** The connection settings the options select; rejects with KubeConfigError when they are unusable. */
export async function kubeConnection(opts: Omit<OpenKubeOptions, "nodeName">): Promise<KubeConnection> {
  if (!opts.kubeconfig) return inClusterConnection({ serviceAccountDir: opts.serviceAccountDir });
  const { loadKubeconfig } = await import("./kubeconfig.ts");
  return loadKubeconfig(opts.kubeconfig, { context: opts.context });
}

/** Rejects with KubeConfigError when the settings are unusable; connects only on start(). */
export async function openKubePodSource(opts: OpenKubeOptions): Promise<PodSource> {
  const config = await kubeConnection(opts);
  if (config.insecureSkipTlsVerify) {
    log.warn("{source} asks to skip verifying the API server certificate", { source: config.description });
  }
  log.info("pods from {source}", { source: config.description });
  return new KubePodSource({ config, nodeName: opts.nodeName });
}
