// Picks the pod source from the flags: a pods file when given, the Kubernetes API otherwise.
import type { PodSource } from "./source.ts";

export interface PodSourceFlags {
  podsFile?: string;
  kubeconfig?: string;
  serviceAccountDir?: string;
  nodeName: string;
}

export async function openPodSource(f: PodSourceFlags): Promise<PodSource> {
  // Each source's modules load only when chosen: the file's YAML parser is not wanted in a cluster.
  if (f.podsFile) {
    const { FilePodSource } = await import("./file_source.ts");
    return new FilePodSource(f.podsFile, f.nodeName);
  }
  const { openKubePodSource } = await import("../kube/open.ts");
  return await openKubePodSource({
    kubeconfig: f.kubeconfig,
    serviceAccountDir: f.serviceAccountDir,
    nodeName: f.nodeName,
  });
}
