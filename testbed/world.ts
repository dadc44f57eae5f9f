// A node for datapath tests: a bridge namespace, meshed pods with a test sidecar, an outside server,
// a child cgroup holding the pods' processes, and our datapath loaded with a test-only pin directory.
import { connAdmitLimit, type Datapath, DEFAULT_TABLE_SIZE } from "../src/datapath/datapath.ts";
import { meshParams } from "../src/mesh/modes.ts";
import { podPolicy, type PolicyResult } from "../src/mesh/policy.ts";
import type { MeshMode, MeshParams } from "../src/mesh/types.ts";
import {
  closeMarkListener,
  listenerNetnsCookie,
  openMarkListener,
  randomMark,
} from "../src/netns/mark_listener.ts";
import { loadDatapath, markPod } from "./datapath.ts";
import { addIpv6, createCgroup, createNode, createPod, type TestNode, type TestPod, uniq } from "./netns.ts";
import { listening, nettool, sidecarReady, startNettool, startSidecar } from "./peers.ts";
import type { Proc } from "./proc.ts";
import type { Scope } from "./scope.ts";

export const APP_UID = 1000;

export interface World {
  scope: Scope;
  node: TestNode;
  cgroup: string;
  pinPath: string;
  dp: Datapath;
  mesh: MeshParams;
  pods: Record<string, TestPod>;
  sidecars: Record<string, Proc>;
  /** Runs nettool client in a pod as the app (in the cgroup unless told otherwise). */
  client(
    pod: string,
    target: string,
    opts?: { uid?: number; gid?: number; outsideCgroup?: boolean; bytes?: number; args?: string[] },
  ): Promise<Record<string, unknown>>;
  /** Lines a pod's sidecar logged for accepted connections since `from`. */
  accepted(pod: string, from?: number): Record<string, unknown>[];
  /** Connections a pod's sidecar refused as capture loops since `from` (its own hop came back). */
  loops(pod: string, from?: number): Record<string, unknown>[];
  /**
   * Makes a pod known to the datapath as the CNI does: a mark listener in its namespace, the mark's
   * entry, and the policy its annotations give in this world's mesh (written again on each call; the
   * listener is opened once and closed with the scope). A dual-stack pod is identified by both of its
   * IPs and its policy written under each; `ipv6Only` identifies it by its IPv6 alone.
   */
  identify(
    pod: string,
    annotations?: Record<string, string>,
    o?: { ipv6Only?: boolean; asCni?: boolean },
  ): PolicyResult;
  /**
   * Makes a pod known by its network namespace cookie alone (no mark listener), as the daemon records
   * a pod it found without CNI mode; the policy as in identify().
   */
  identifyByNetns(pod: string, annotations?: Record<string, string>): PolicyResult;
}

export interface WorldOptions {
  mode?: MeshMode;
  /** Meshed pods (each gets a test sidecar); default ["a", "b"]. */
  meshed?: string[];
  /** Plain pods outside the mesh with servers on these ports; default { r: [8080, 9090] }. */
  outside?: Record<string, number[]>;
  dnsCapture?: boolean;
  /** The sockmap fast path: on unless false here, so every kernel test exercises it (the daemon defaults to off). */
  sockmap?: boolean;
  attach?: boolean;
  /** Capacity of the connection tables (default DEFAULT_TABLE_SIZE). */
  connTableSize?: number;
  /** Capacity of the inbound handshake table (default DEFAULT_TABLE_SIZE). */
  synTableSize?: number;
  /** More arguments for every test sidecar (nettool proxy). */
  sidecarArgs?: string[];
  /**
   * Dual-stack pods: each gets an IPv6 address too (addIpv6), sidecars listen on [::] for both
   * families, and the outside servers on [::].
   */
  ipv6?: boolean;
}

export async function createWorld(scope: Scope, opts: WorldOptions = {}): Promise<World> {
  const prefix = uniq();
  const mesh = meshParams(opts.mode ?? "istio");
  const node = await createNode(scope, prefix);
  const cgroup = await createCgroup(scope, `${prefix}-cg`);
  const pinPath = `/sys/fs/bpf/${prefix}-test`;
  const dp = loadDatapath(scope, {
    pinPath,
    cgroup,
    mesh,
    dnsCapture: opts.dnsCapture,
    sockmap: opts.sockmap ?? true,
    connTableSize: opts.connTableSize,
    synTableSize: opts.synTableSize,
    connAdmit: connAdmitLimit(opts.connTableSize ?? DEFAULT_TABLE_SIZE),
    attach: opts.attach,
  });

  const pods: Record<string, TestPod> = {};
  const sidecars: Record<string, Proc> = {};
  const marks = new Map<string, number>();
  const cookies = new Map<string, bigint>();
  const taken = new Set<number>();
  let octet = 10;
  for (const name of opts.meshed ?? ["a", "b"]) {
    const pod = await createPod(scope, node, name, octet++);
    pods[name] = pod;
    if (opts.ipv6) await addIpv6(pod, node);
    const sc = startSidecar(scope, {
      netns: pod.ns,
      cgroup,
      mesh,
      dualStack: opts.ipv6,
      args: opts.sidecarArgs,
    });
    sidecars[name] = sc;
  }
  octet = 100;
  for (const [name, ports] of Object.entries(opts.outside ?? { r: [8080, 9090] })) {
    const pod = await createPod(scope, node, name, octet++);
    pods[name] = pod;
    if (opts.ipv6) await addIpv6(pod, node);
    const bind = opts.ipv6 ? ["--bind", "::"] : [];
    for (const port of ports) {
      const p = startNettool(scope, { netns: pod.ns }, [
        "server",
        "--name",
        name,
        "--port",
        String(port),
        ...bind,
      ]);
      await listening(p, [""], 15000, `${name}:${port}`);
    }
  }
  for (const sc of Object.values(sidecars)) await sidecarReady(sc);
  return {
    scope,
    node,
    cgroup,
    pinPath,
    dp,
    mesh,
    pods,
    sidecars,
    client(pod, target, o = {}) {
      return nettool(
        {
          netns: pods[pod]!.ns,
          cgroup: o.outsideCgroup ? undefined : cgroup,
          uid: o.uid ?? APP_UID,
          gid: o.gid,
        },
        ["client", target, "--bytes", String(o.bytes ?? 64), ...(o.args ?? [])],
      );
    },
    accepted(pod, from = 0) {
      return sidecars[pod]!.lines.slice(from).filter((l) => l.event === "accepted");
    },
    loops(pod, from = 0) {
      return sidecars[pod]!.lines.slice(from).filter((l) => l.event === "loop");
    },
    identify(pod, annotations = {}, o = {}) {
      const p = pods[pod]!;
      const ip4 = o.ipv6Only ? "" : p.ip;
      let mark = marks.get(pod);
      if (mark === undefined) {
        const l = markPod(scope, p, taken);
        mark = l.mark;
        marks.set(pod, mark);
        cookies.set(pod, l.cookie);
      }
      if (o.asCni) {
        // As in CNI mode: the mark entry from the CNI result's IPv4, the namespace entry with both.
        dp.maps.putMark(mark, ip4);
        dp.maps.putNetnsPod(cookies.get(pod)!, ip4, p.ip6 ?? "");
      } else {
        dp.maps.putMark(mark, ip4, p.ip6 ?? "");
      }
      const result = podPolicy(annotations, mesh.mode);
      if (ip4) dp.maps.putPod(ip4, result.policy);
      else dp.maps.deletePod(p.ip);
      if (p.ip6) dp.maps.putPod(p.ip6, result.policy);
      return result;
    },
    identifyByNetns(pod, annotations = {}) {
      const p = pods[pod]!;
      // A socket in the namespace tells its cookie; it is closed at once, so only the cookie remains.
      const l = openMarkListener(`/run/netns/${p.ns}`, randomMark(() => false));
      const cookie = listenerNetnsCookie(l);
      closeMarkListener(l);
      dp.maps.putNetnsPod(cookie, p.ip);
      const result = podPolicy(annotations, mesh.mode);
      dp.maps.putPod(p.ip, result.policy);
      return result;
    },
  };
}
