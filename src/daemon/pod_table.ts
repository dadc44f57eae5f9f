// The daemon's view of this node's pods: decoded from each snapshot the pod source delivers, with
// annotation warnings logged once per change rather than on every snapshot.
import { getLogger } from "../log/logger.ts";
import { podEntry } from "../mesh/membership.ts";
import type { MeshMode, PodEntry } from "../mesh/types.ts";
import type { Pod } from "../pods/source.ts";

const log = getLogger("pods");

export class PodTable {
  #entries = new Map<string, PodEntry>();
  /** The pod object each entry was decoded from: a source hands the same object for an unchanged pod. */
  #from = new Map<string, Pod>();
  #warned = new Map<string, string>();
  snapshots = 0;

  constructor(readonly mode: MeshMode) {}

  static key(namespace: string, name: string): string {
    return `${namespace}/${name}`;
  }

  /**
   * Replaces the table with a snapshot; returns how many entries changed. An entry that did not
   * change stays the same object, so a snapshot with one pod changed costs about one pod's work
   * further on.
   */
  set(pods: Pod[]): number {
    const next = new Map<string, PodEntry>();
    const from = new Map<string, Pod>();
    for (const p of pods) {
      const name = p.metadata?.name;
      const same = name ? PodTable.key(p.metadata?.namespace ?? "default", name) : undefined;
      const kept = same !== undefined && this.#from.get(same) === p ? this.#entries.get(same) : undefined;
      if (kept) {
        // The very object decoded last time: sources never change a pod they handed out.
        next.set(same!, kept);
        from.set(same!, p);
        continue;
      }
      let e: PodEntry;
      try {
        e = podEntry(p, this.mode);
      } catch (err) {
        // One absurd pod must not stop the others from being served.
        log.error("pod {name}: {error}", { name: p.metadata?.name ?? "?", error: (err as Error).message });
        continue;
      }
      const k = PodTable.key(e.namespace, e.name);
      const old = this.#entries.get(k);
      next.set(k, old && JSON.stringify(old) === JSON.stringify(e) ? old : e);
      from.set(k, p);
      const w = JSON.stringify(e.warnings);
      if (e.warnings.length && this.#warned.get(k) !== w) {
        for (const x of e.warnings) {
          log.warn("pod {pod}: annotation {annotation}: item {item}: {reason}", {
            pod: k,
            annotation: x.annotation,
            item: x.item,
            reason: x.reason,
          });
        }
      }
      this.#warned.set(k, w);
    }
    for (const k of this.#warned.keys()) if (!next.has(k)) this.#warned.delete(k);
    let changed = 0;
    for (const [k, e] of next) if (this.#entries.get(k) !== e) changed++;
    for (const k of this.#entries.keys()) if (!next.has(k)) changed++;
    this.#entries = next;
    this.#from = from;
    this.snapshots++;
    return changed;
  }

  get(namespace: string, name: string): PodEntry | undefined {
    return this.#entries.get(PodTable.key(namespace, name));
  }

  entries(): PodEntry[] {
    return [...this.#entries.values()];
  }

  counts(): { meshed: number; notMeshed: number; noIp: number } {
    let meshed = 0, notMeshed = 0, noIp = 0;
    for (const e of this.#entries.values()) {
      if (!e.inMesh) notMeshed++;
      else if (!e.ip) noIp++;
      else meshed++;
    }
    return { meshed, notMeshed, noIp };
  }
}
