// The node's pod-keyed state in one place. What every pod-keyed map should hold is computed from
// three inputs only (the pod source's table, the CNI attachment records, the namespaces the identity
// scan found) by one pure function, and one writer makes the maps equal to it with the fewest writes.
// Nothing else writes local_pods, pod_counters, mark_pod_ips or netns_pod_ips.
import { encodePodConfig } from "../maps/layouts.ts";
import type { PodEntry, PodPolicy } from "../mesh/types.ts";
import type { NetnsInfo } from "../netns/discover.ts";
import { desiredIdentities, type Identity, type IdentityPod } from "./identity.ts";
import type { AttachmentRecord } from "./state_store.ts";

/** A CNI attachment as its owner reports it: the durable record and the policy it was attached with. */
export interface AttachedPod {
  rec: AttachmentRecord;
  /** The pod's policy when its ADD was answered; used while the pod source does not list the pod. */
  policy?: PodPolicy;
}

export interface NodeStateInputs {
  /** This node's pods as the pod source lists them. */
  pods: readonly PodEntry[];
  attached: readonly AttachedPod[];
  /** Namespaces found on the node with their addresses; undefined before the first scan. */
  namespaces: readonly NetnsInfo[] | undefined;
  /**
   * Mark entries found in the kernel that no record owns (a damaged state file): kept while their IP
   * is a meshed pod's, so the repair pass can give the pod its mark back.
   */
  orphanMarks?: ReadonlyMap<number, string>;
  /** The policy of an attached pod whose policy is unknown. */
  fallbackPolicy: PodPolicy;
}

/** The two addresses of a pod-IPs value ("" for a family the pod has none in). */
export interface PodIpPair {
  ip4: string;
  ip6: string;
}

export interface DesiredNodeState {
  /** local_pods: pod IP (either family) -> policy. A dual-stack pod is keyed by both IPs. */
  localPods: Map<string, PodPolicy>;
  /** pod_counters: one entry per local_pods key. */
  podCounters: Set<string>;
  /** mark_pod_ips: listener mark -> the attached pod's addresses. */
  marks: Map<number, PodIpPair>;
  /** netns_pod_ips: namespace cookie -> identity (the pod's addresses and how it was found). */
  netnsPods: Map<bigint, Identity>;
  /** The meshed pods with an address, as identity sees them. */
  identityPods: IdentityPod[];
}

/** Meshed pods with at least one address. */
export function meshedPods(pods: readonly PodEntry[]): IdentityPod[] {
  const out: IdentityPod[] = [];
  for (const e of pods) {
    if (!e.inMesh || !(e.ip || e.ip6)) continue;
    out.push({ namespace: e.namespace, name: e.name, ip: e.ip, ...(e.ip6 ? { ip6: e.ip6 } : {}) });
  }
  return out;
}

/** Every address of the meshed pods: what the namespace scan looks for. */
export function wantedIps(pods: readonly IdentityPod[]): Set<string> {
  const out = new Set<string>();
  for (const p of pods) {
    if (p.ip) out.add(p.ip);
    if (p.ip6) out.add(p.ip6);
  }
  return out;
}

export function desiredNodeState(i: NodeStateInputs): DesiredNodeState {
  const byPod = new Map<string, PodEntry>();
  for (const e of i.pods) byPod.set(`${e.namespace}/${e.name}`, e);
  const localPods = new Map<string, PodPolicy>();
  for (const e of i.pods) {
    if (!e.inMesh) continue;
    if (e.ip) localPods.set(e.ip, e.policy);
    if (e.ip6) localPods.set(e.ip6, e.policy);
  }
  const marks = new Map<number, PodIpPair>();
  for (const a of i.attached) {
    const r = a.rec;
    // An attached pod keeps its entry while it lives, listed by the source or not: its traffic
    // is already being redirected by its listener and ingress programs.
    if (!localPods.has(r.podIp)) {
      localPods.set(
        r.podIp,
        byPod.get(`${r.podNamespace}/${r.podName}`)?.policy ?? a.policy ?? i.fallbackPolicy,
      );
    }
    // The mark names the CNI result's IPv4; connect6 takes the pod's IPv6 from its namespace entry.
    marks.set(r.mark, { ip4: r.podIp, ip6: "" });
  }
  const identityPods = meshedPods(i.pods);
  if (i.orphanMarks?.size) {
    const wanted = wantedIps(identityPods);
    for (const [mark, ip] of i.orphanMarks) {
      if (!marks.has(mark) && wanted.has(ip)) marks.set(mark, { ip4: ip, ip6: "" });
    }
  }
  const pinned = i.attached.filter((a) => a.rec.netnsCookie).map((a) => ({
    cookie: BigInt(a.rec.netnsCookie!),
    ip: a.rec.podIp,
    namespace: a.rec.podNamespace,
    name: a.rec.podName,
  }));
  const netnsPods = desiredIdentities(identityPods, i.namespaces ?? [], pinned);
  return { localPods, podCounters: new Set(localPods.keys()), marks, netnsPods, identityPods };
}

/** The operations on the pod-keyed maps the writer needs (DatapathMaps has them; tests give a fake). */
export interface PodKeyedMaps {
  podIps(): string[];
  podBytes(ip: string): Uint8Array | undefined;
  putPodBytes(ip: string, bytes: Uint8Array): void;
  deletePod(ip: string): boolean;
  podCounterIps(): string[];
  addPodCounters(ip: string): void;
  deletePodCounters(ip: string): boolean;
  markIps(): Map<number, PodIpPair>;
  putMark(mark: number, ip4: string, ip6?: string): void;
  deleteMark(mark: number): boolean;
  netnsPodIps(): Map<bigint, PodIpPair>;
  putNetnsPod(cookie: bigint, ip4: string, ip6?: string): void;
  deleteNetnsPod(cookie: bigint): boolean;
}

export interface MapWrites {
  added: number;
  updated: number;
  removed: number;
}

export interface NodeStateWrites {
  localPods: MapWrites;
  podCounters: MapWrites;
  marks: MapWrites;
  netnsPods: MapWrites & { written: Set<bigint>; removedKeys: bigint[] };
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const pairText = (p: PodIpPair) => `${p.ip4}|${p.ip6}`;
const zero = (): MapWrites => ({ added: 0, updated: 0, removed: 0 });

export interface ApplyOptions {
  /**
   * Only create keys that are missing: nothing is updated or removed. For the time before the pod
   * source's first snapshot, when the desired state knows the attachments but not the pods.
   */
  addOnly?: boolean;
}

/**
 * Makes the pod-keyed maps equal to a desired state. It remembers what the maps hold (read once, then
 * kept from its own writes), so a change costs the entries it touches, not a read of every map;
 * unchanged entries are never rewritten (a rewrite is not atomic for readers of a hash map value).
 * resync() reads the maps again, for entries someone else changed.
 */
export class NodeStateWriter {
  /** ip -> the policy object last written (absent: known by its encoding only) and its encoding. */
  #pods = new Map<string, { policy?: PodPolicy; bytes: Uint8Array | undefined }>();
  #counters = new Set<string>();
  #marks = new Map<number, string>();
  #netns = new Map<bigint, string>();
  #stale = true;

  constructor(readonly maps: PodKeyedMaps) {}

  /** The next apply reads every map again instead of trusting what it wrote. */
  resync(): void {
    this.#stale = true;
  }

  #load(): void {
    if (!this.#stale) return;
    const old = this.#pods;
    this.#pods = new Map();
    for (const ip of this.maps.podIps()) {
      const bytes = this.maps.podBytes(ip);
      const had = old.get(ip);
      // Compared by encoding where the policy behind it is not known: a restarted daemon rewrites
      // nothing that is right, and an entry still as written keeps its policy (no encoding again).
      this.#pods.set(ip, had && bytes && sameBytes(had.bytes, bytes) ? had : { bytes });
    }
    this.#counters = new Set(this.maps.podCounterIps());
    this.#marks = new Map([...this.maps.markIps()].map(([m, p]) => [m, pairText(p)]));
    this.#netns = new Map([...this.maps.netnsPodIps()].map(([c, p]) => [c, pairText(p)]));
    this.#stale = false;
  }

  apply(d: DesiredNodeState, o: ApplyOptions = {}): NodeStateWrites {
    this.#load();
    const add = !o.addOnly;
    const w: NodeStateWrites = {
      localPods: zero(),
      podCounters: zero(),
      marks: zero(),
      netnsPods: { ...zero(), written: new Set(), removedKeys: [] },
    };
    // One map failing (full, say) does not keep the others from their entries; the first error is
    // reported after all were tried.
    let failure: unknown;
    const section = (f: () => void) => {
      try {
        f();
      } catch (e) {
        failure ??= e;
      }
    };
    section(() => {
      const pods = this.#pods;
      if (add) {
        for (const ip of pods.keys()) {
          if (d.localPods.has(ip)) continue;
          this.maps.deletePod(ip);
          pods.delete(ip);
          w.localPods.removed++;
        }
      }
      for (const [ip, policy] of d.localPods) {
        const had = pods.get(ip);
        if (had && (had.policy === policy || !add)) continue;
        const bytes = encodePodConfig(policy);
        if (had && sameBytes(had.bytes, bytes)) {
          had.policy = policy;
          continue;
        }
        this.maps.putPodBytes(ip, bytes);
        pods.set(ip, { policy, bytes });
        had ? w.localPods.updated++ : w.localPods.added++;
      }
    });
    section(() => {
      const counters = this.#counters;
      if (add) {
        for (const ip of [...counters]) {
          if (d.podCounters.has(ip)) continue;
          this.maps.deletePodCounters(ip);
          counters.delete(ip);
          w.podCounters.removed++;
        }
      }
      for (const ip of d.podCounters) {
        if (counters.has(ip)) continue;
        // Existing entries are kept: their counts are the pod's history.
        this.maps.addPodCounters(ip);
        counters.add(ip);
        w.podCounters.added++;
      }
    });
    section(() => {
      const marks = this.#marks;
      if (add) {
        for (const m of [...marks.keys()]) {
          if (d.marks.has(m)) continue;
          this.maps.deleteMark(m);
          marks.delete(m);
          w.marks.removed++;
        }
      }
      for (const [m, p] of d.marks) {
        const had = marks.get(m), want = pairText(p);
        if (had === want || (had !== undefined && !add)) continue;
        this.maps.putMark(m, p.ip4, p.ip6);
        marks.set(m, want);
        had === undefined ? w.marks.added++ : w.marks.updated++;
      }
    });
    section(() => {
      const netns = this.#netns;
      if (add) {
        for (const c of [...netns.keys()]) {
          if (d.netnsPods.has(c)) continue;
          this.maps.deleteNetnsPod(c);
          netns.delete(c);
          w.netnsPods.removed++;
          w.netnsPods.removedKeys.push(c);
        }
      }
      for (const [c, i] of d.netnsPods) {
        const had = netns.get(c), p = { ip4: i.ip, ip6: i.ip6 ?? "" }, want = pairText(p);
        if (had === want || (had !== undefined && !add)) continue;
        this.maps.putNetnsPod(c, p.ip4, p.ip6);
        netns.set(c, want);
        w.netnsPods.written.add(c);
        had === undefined ? w.netnsPods.added++ : w.netnsPods.updated++;
      }
    });
    if (failure !== undefined) throw failure;
    return w;
  }
}
