// The Kubernetes pod source as the daemon's flags describe it: a kubeconfig when one is given, the
// pod's own service account otherwise.
import { getLogger } from "../log/logger.ts";
import type { PodSource } from "../pods/source.ts";
import { inClusterConnection, type KubeConnection, loadKubeconfig } from "./config.ts";
import { KubePodSource } from "./pod_source.ts";

const log = getLogger("kube");

export interface OpenKubeOptions {
  /** Path of a kubeconfig; in-cluster settings when absent. */
  kubeconfig?: string;
  /** Context of the kubeconfig to use instead of its current-context. */
  context?: string;
  nodeName: string;
}

/** The connection settings the options select; throws KubeConfigError when they are unusable. */
export function kubeConnection(opts: Omit<OpenKubeOptions, "nodeName">): KubeConnection {
  return opts.kubeconfig ? loadKubeconfig(opts.kubeconfig, { context: opts.context }) : inClusterConnection();
}

/** Rejects with KubeConfigError when the settings are unusable; connects only on start(). */
export function openKubePodSource(opts: OpenKubeOptions): Promise<PodSource> {
  let config: KubeConnection;
  try {
    config = kubeConnection(opts);
  } catch (e) {
    return Promise.reject(e);
  }
  if (config.insecureSkipTlsVerify) {
    log.warn("{source} asks to skip verifying the API server certificate", { source: config.description });
  }
  log.info("pods from {source}", { source: config.description });
  return Promise.resolve(new KubePodSource({ config, nodeName: opts.nodeName }));
}
