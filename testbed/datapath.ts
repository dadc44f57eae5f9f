// Our datapath loaded in this process with a pin directory of its own, attached to a child cgroup, and
// pods made known to it the way the CNI plugin or the daemon's namespace scan would.
import { removePinTree } from "../src/bpf/pins.ts";
import { Datapath } from "../src/datapath/datapath.ts";
import type { MeshParams, PodPolicy } from "../src/mesh/types.ts";
import { currentNetnsCookie } from "../src/netns/cookie.ts";
import {
  closeMarkListener,
  listenerNetnsCookie,
  type MarkListener,
  openMarkListener,
  randomMark,
} from "../src/netns/mark_listener.ts";
import type { TestPod } from "./netns.ts";
import type { Scope } from "./scope.ts";

export interface LoadOptions {
  pinPath: string;
  cgroup: string;
  mesh: MeshParams;
  cniMode?: boolean;
  sockmap?: boolean;
  dnsCapture?: boolean;
  connTableSize?: number;
  synTableSize?: number;
  /** The connection admission limit written to the mesh config (0: none). */
  connAdmit?: number;
  /** Attach the programs (default true). */
  attach?: boolean;
}

export function loadDatapath(scope: Scope, o: LoadOptions): Datapath {
  scope.defer(() => removePinTree(o.pinPath));
  const dp = Datapath.load({
    pinPath: o.pinPath,
    cgroupPath: o.cgroup,
    dnsCapture: o.dnsCapture ?? false,
    connTableSize: o.connTableSize,
    synTableSize: o.synTableSize,
  });
  scope.defer(() => dp.close());
  // Config before attach, as the daemon does: programs attached first would run without it.
  dp.maps.setMeshConfig(o.mesh, {
    dnsCapture: o.dnsCapture ?? false,
    cniMode: o.cniMode ?? false,
    sockmap: o.sockmap ?? false,
    hostNetns: currentNetnsCookie(),
    ...(o.connAdmit !== undefined ? { connAdmit: o.connAdmit } : {}),
  });
  if (o.attach ?? true) dp.attach();
  return dp;
}

/**
 * A pod's mark listener on 39807, as the CNI ADD opens it, closed with the scope; its mark is one no
 * other listener of `marks` holds. Returns the mark and the namespace's cookie.
 */
export function markPod(
  scope: Scope,
  pod: TestPod,
  marks: Set<number>,
): { mark: number; cookie: bigint; listener: MarkListener } {
  const mark = randomMark((m) => marks.has(m));
  marks.add(mark);
  const listener = openMarkListener(`/run/netns/${pod.ns}`, mark);
  scope.defer(() => closeMarkListener(listener));
  return { mark, cookie: listenerNetnsCookie(listener), listener };
}

/** What the CNI plugin writes for a meshed IPv4 pod: its mark listener, mark and namespace entries, policy. */
export function identifyAsCni(
  scope: Scope,
  dp: Datapath,
  pod: TestPod,
  marks: Set<number>,
  policy: PodPolicy,
): void {
  const { mark, cookie } = markPod(scope, pod, marks);
  dp.maps.putMark(mark, pod.ip);
  dp.maps.putNetnsPod(cookie, pod.ip);
  dp.maps.putPod(pod.ip, policy);
}
