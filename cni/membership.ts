// Mesh membership decided by the plugin itself, for when the daemon cannot be asked. Refusing every
// pod while the agent is gone would stop the node from starting anything (the agent's own
// replacement and its uninstaller included), and letting a meshed pod start would run it around its
// sidecar: so the plugin reads the pod from where the daemon would and decides with the daemon's
// rules. Everything here is loaded only on that path, keeping the usual ADD cheap.
import { MESH_MODES, type MeshMode } from "../src/mesh/types.ts";
import { isRecord } from "../src/util/record.ts";

/**
 * Written by the installer into our entry of the chain: the daemon's pod source and mesh mode.
 * Exactly one of podsFile and kubeconfig is set.
 */
export interface MembershipConf {
  mode: MeshMode;
  nodeName: string;
  /** The pods file the daemon reads. */
  podsFile?: string;
  /** A kubeconfig the plugin may use (root-only; written by the installer for in-cluster agents). */
  kubeconfig?: string;
  context?: string;
}

/** The pod could not be judged: the caller treats it as possibly meshed. */
export class MembershipUnknownError extends Error {
  override readonly name = "MembershipUnknownError";
}

/** Validates the entry's "membership" field; returns a message for what is wrong, or the conf. */
export function parseMembershipConf(v: unknown): MembershipConf | string {
  if (!isRecord(v)) return `"membership" must be a JSON object`;
  if (typeof v.mode !== "string" || !(MESH_MODES as readonly string[]).includes(v.mode)) {
    return `"membership.mode" must be one of ${MESH_MODES.join(", ")}`;
  }
  if (typeof v.nodeName !== "string") return `"membership.nodeName" must be a string`;
  const conf: MembershipConf = { mode: v.mode as MeshMode, nodeName: v.nodeName };
  for (const key of ["podsFile", "kubeconfig", "context"] as const) {
    const s = v[key];
    if (s === undefined) continue;
    if (typeof s !== "string" || s === "") return `"membership.${key}" must be a non-empty string`;
    if (key !== "context" && !s.startsWith("/")) return `"membership.${key}" must be an absolute path`;
    conf[key] = s;
  }
  if ((conf.podsFile === undefined) === (conf.kubeconfig === undefined)) {
    return `"membership" needs exactly one of "podsFile" and "kubeconfig"`;
  }
  return conf;
}

/** A pod too malformed to judge is not judged "not meshed". */
function judge<P, M>(isInMesh: (p: P, m: M) => boolean, pod: P, mode: M): boolean {
  try {
    return isInMesh(pod, mode);
  } catch (e) {
    throw new MembershipUnknownError(`the pod's object cannot be read: ${(e as Error).message}`);
  }
}

export interface LocalDecision {
  inMesh: boolean;
  /** For logs and error messages: where the answer came from. */
  source: string;
}

/**
 * Whether the pod is in the mesh, read the way the daemon would. Throws MembershipUnknownError when
 * the source cannot answer (unreadable file, API unreachable or refusing, pod not found in the API).
 */
export async function decideMembership(
  conf: MembershipConf,
  pod: { namespace: string; name: string },
  timeoutMs: number,
): Promise<LocalDecision> {
  const { isInMesh } = await import("../src/mesh/membership.ts");
  if (conf.podsFile) {
    const { parsePodsYaml, podsOfNode } = await import("../src/pods/file_source.ts");
    let pods;
    try {
      pods = podsOfNode(parsePodsYaml(conf.podsFile, await Deno.readTextFile(conf.podsFile)), conf.nodeName);
    } catch (e) {
      throw new MembershipUnknownError(`pods file ${conf.podsFile}: ${(e as Error).message}`);
    }
    const found = pods.find((p) =>
      (p.metadata?.namespace ?? "default") === pod.namespace && p.metadata?.name === pod.name
    );
    // The file is the whole truth for the daemon too: a pod it does not list is not meshed.
    return {
      inMesh: found !== undefined && judge(isInMesh, found, conf.mode),
      source: `file ${conf.podsFile}`,
    };
  }
  const { loadKubeconfig } = await import("../src/kube/kubeconfig.ts");
  const { KubeClient } = await import("../src/kube/client.ts");
  let client;
  try {
    client = new KubeClient(loadKubeconfig(conf.kubeconfig!, { context: conf.context }), {
      requestTimeoutMs: timeoutMs,
    });
  } catch (e) {
    throw new MembershipUnknownError(`kubeconfig ${conf.kubeconfig}: ${(e as Error).message}`);
  }
  try {
    const found = await client.getPod(pod.namespace, pod.name, AbortSignal.timeout(timeoutMs));
    if (!found) {
      // The runtime only creates sandboxes for pods the API holds; not finding it is no evidence.
      throw new MembershipUnknownError(
        `the API server (${client.server}) has no pod ${pod.namespace}/${pod.name}`,
      );
    }
    return { inMesh: judge(isInMesh, found, conf.mode), source: `API server ${client.server}` };
  } catch (e) {
    if (e instanceof MembershipUnknownError) throw e;
    throw new MembershipUnknownError(`reading the pod from ${client.server}: ${(e as Error).message}`);
  } finally {
    client.close();
  }
}
