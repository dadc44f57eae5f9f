// Picks the pod source from the flags: a pods file when given, the Kubernetes API otherwise.
import { FilePodSource } from "./file_source.ts";
import type { PodSource } from "./source.ts";

export interface PodSourceFlags {
  podsFile?: string;
  kubeconfig?: string;
  nodeName: string;
}

export async function openPodSource(f: PodSourceFlags): Promise<PodSource> {
  if (f.podsFile) return new FilePodSource(f.podsFile, f.nodeName);
  const { openKubePodSource } = await import("../kube/open.ts");
  return await openKubePodSource({ kubeconfig: f.kubeconfig, nodeName: f.nodeName });
}
