// Pod identity by network-namespace cookie, in every mode: netns_pod_ips holds, for each meshed pod
// whose IP is found on an interface of a namespace of this node, that namespace's cookie -> the pod
// IP, which is how connect4 knows which pod is calling when no mark listener answers (any mode
// without the CNI). The CNI attachments' own entries are part of the desired state, so nothing an
// ADD made is removed while the attachment lives. The map itself is written by the node-state writer.
import { getLogger } from "../log/logger.ts";
import type { NetnsDiscovery, NetnsInfo } from "../netns/discover.ts";

const log = getLogger("identity");

/** A meshed pod with an IP, as the pod table knows it: its IPv4 ("" if none) and its IPv6, if any. */
export interface IdentityPod {
  namespace: string;
  name: string;
  ip: string;
  ip6?: string;
}

/** An entry someone else owns (a CNI attachment), kept as long as it is listed. */
export interface PinnedIdentity {
  cookie: bigint;
  ip: string;
  namespace: string;
  name: string;
}

export interface Identity {
  cookie: bigint;
  /** The pod's IPv4 ("" if none). */
  ip: string;
  /** Its IPv6, if any. */
  ip6?: string;
  /** "netns": found by this reconciler; "cni": written by the pod's CNI attachment. */
  via: "netns" | "cni";
  /** The namespace path it was found through (netns only). */
  netns?: string;
  /** namespace/name of the pod it belongs to, when known. */
  pod?: string;
}

export function podKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

/**
 * cookie -> identity: every namespace that carries a meshed pod's IP, and every pinned entry. A pod
 * IP in two namespaces (a pod being torn down while its IP is handed out again) maps both: either
 * namespace's processes act for that IP.
 */
export function desiredIdentities(
  pods: readonly IdentityPod[],
  namespaces: readonly NetnsInfo[],
  pinned: readonly PinnedIdentity[],
): Map<bigint, Identity> {
  const byIp = new Map<string, IdentityPod>();
  for (const p of pods) {
    if (p.ip) byIp.set(p.ip, p);
    if (p.ip6) byIp.set(p.ip6, p);
  }
  const out = new Map<bigint, Identity>();
  for (const ns of namespaces) {
    for (const ip of ns.ips) {
      const p = byIp.get(ip);
      if (!p) continue;
      // Either of a dual-stack pod's addresses names it; the entry carries both.
      out.set(ns.cookie, {
        cookie: ns.cookie,
        ip: p.ip,
        ...(p.ip6 ? { ip6: p.ip6 } : {}),
        via: "netns",
        netns: ns.path,
        pod: podKey(p),
      });
      break;
    }
  }
  for (const x of pinned) {
    // The CNI's entry knows the pod's IPv4 from the CNI result; its IPv6 comes from the pod source.
    const ip6 = byIp.get(x.ip)?.ip6;
    out.set(x.cookie, { cookie: x.cookie, ip: x.ip, ...(ip6 ? { ip6 } : {}), via: "cni", pod: podKey(x) });
  }
  return out;
}

/**
 * How the node's meshed pods are identified: it runs the namespace scan (only when the addresses
 * looked for changed, or when asked: the periodic pass and the netns dirs' events) and keeps, from
 * the entries the node-state writer made, which pod each namespace cookie names, for `merbridge pods`,
 * the metrics and the logs. It writes no map.
 */
export class IdentityTracker {
  #current = new Map<bigint, Identity>();
  #byPod = new Map<string, Identity[]>();
  #pods: IdentityPod[] = [];
  #wanted = new Set<string>();
  #namespaces?: NetnsInfo[];
  #runs = 0;

  constructor(readonly discovery: NetnsDiscovery) {}

  /**
   * The namespaces of the node: scanned again when `force` is set or when `wanted` differs from the
   * set the last scan looked for, else what the last scan found (a policy change moves no address).
   */
  namespaces(wanted: Set<string>, force: boolean): NetnsInfo[] {
    if (force || !this.#namespaces || !sameSet(wanted, this.#wanted)) {
      this.#namespaces = this.discovery.scan(wanted);
      this.#wanted = wanted;
    }
    return this.#namespaces;
  }

  /** Takes in the identities just made the desired state, with the cookies that were (re)written. */
  update(
    pods: IdentityPod[],
    desired: Map<bigint, Identity>,
    written: ReadonlySet<bigint>,
    removed: number,
  ): void {
    const livePods = new Set(pods.map(podKey));
    const liveCookies = new Set((this.#namespaces ?? []).map((n) => n.cookie));
    if (this.#runs++ === 0) {
      // A restarted daemon finds most entries already right: one line for those, not one per pod.
      this.#logChanges(new Map([...desired].filter(([c]) => written.has(c))), livePods, liveCookies);
      log.info("pod identity: {n} namespace entries, {kept} kept from before, {removed} stale removed", {
        n: desired.size,
        kept: desired.size - written.size,
        removed,
      });
    } else if (written.size || removed || desired.size !== this.#current.size) {
      this.#logChanges(desired, livePods, liveCookies);
    }
    this.#pods = pods;
    this.#current = desired;
    this.#byPod = new Map();
    for (const i of desired.values()) {
      if (!i.pod) continue;
      const l = this.#byPod.get(i.pod);
      if (l) l.push(i);
      else this.#byPod.set(i.pod, [i]);
    }
  }

  /** Pod IPs the last scan looked for. */
  wanted(): Set<string> {
    return this.#wanted;
  }

  /** How a pod is identified (one entry per namespace holding its IP), or undefined. */
  of(namespace: string, name: string): Identity[] | undefined {
    return this.#byPod.get(`${namespace}/${name}`);
  }

  counts(): { netns: number; cni: number; unidentified: number } {
    let netns = 0, cni = 0;
    for (const p of this.#pods) {
      const ids = this.#byPod.get(podKey(p));
      if (!ids) continue;
      if (ids.some((i) => i.via === "cni")) cni++;
      else netns++;
    }
    return { netns, cni, unidentified: this.#pods.length - netns - cni };
  }

  #logChanges(next: Map<bigint, Identity>, livePods: Set<string>, liveCookies: Set<bigint>): void {
    for (const [cookie, i] of next) {
      const was = this.#current.get(cookie);
      if (was && was.ip === i.ip && was.ip6 === i.ip6 && was.pod === i.pod) continue;
      log.info("identified {pod}: ip {ip}, netns cookie {cookie} ({via} {netns})", {
        pod: i.pod ?? "?",
        ip: [i.ip, i.ip6].filter(Boolean).join(" "),
        cookie: cookie.toString(),
        via: i.via,
        netns: i.netns ?? "",
      });
    }
    for (const [cookie, i] of this.#current) {
      if (next.has(cookie)) continue;
      const why = i.pod && !livePods.has(i.pod)
        ? "the pod left the pod source (or the mesh)"
        : !liveCookies.has(cookie) && i.via === "netns"
        ? "its network namespace is gone"
        : i.via === "cni"
        ? "its CNI attachment was removed"
        : "its IP is no longer on the namespace";
      log.info("unidentified {pod}: ip {ip}, netns cookie {cookie}: {why}", {
        pod: i.pod ?? "?",
        ip: i.ip,
        cookie: cookie.toString(),
        why,
      });
    }
  }
}

function sameSet<T>(a: ReadonlySet<T>, b: ReadonlySet<T>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

export interface IdentityTriggerOptions {
  /** Directories to watch (those that exist when started). */
  netnsDirs: string[];
  /**
   * Runs the reconciler; returns the age in ms of the youngest namespace a rescan soon could find
   * more in, or undefined (see NetnsDiscovery.settling).
   */
  run(): number | undefined;
  /** The periodic rescan; /proc has no events. */
  intervalMs?: number;
  /**
   * The rescans while a namespace is settling (a runtime mounting a netns file, adding its address):
   * every `settleMs[0]` ms in its first half second, then every `settleMs[1]` ms.
   */
  settleMs?: [number, number];
  signal: AbortSignal;
}

/** Runs on changes in the netns dirs, periodically, and sooner while namespaces are settling. */
export function startIdentityTriggers(o: IdentityTriggerOptions): { kick(): void; done: Promise<void> } {
  const interval = o.intervalMs ?? 1000;
  const [fast, slow] = o.settleMs ?? [10, 100];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = (ms: number) => {
    if (o.signal.aborted) return;
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  };
  const tick = () => {
    let age: number | undefined;
    try {
      age = o.run();
    } catch (e) {
      log.error("pod identity scan failed: {error}", { error: (e as Error).message });
    }
    schedule(age === undefined ? interval : age < 500 ? fast : slow);
  };
  o.signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  const dirs = o.netnsDirs.filter((d) => {
    try {
      return Deno.statSync(d).isDirectory;
    } catch {
      return false;
    }
  });
  let done = Promise.resolve();
  if (dirs.length) {
    const w = Deno.watchFs(dirs, { recursive: false });
    o.signal.addEventListener("abort", () => w.close(), { once: true });
    done = (async () => {
      try {
        // A short debounce: a runtime creates the file and mounts on it in quick succession.
        for await (const _ of w) schedule(5);
      } catch (e) {
        if (!o.signal.aborted) log.error("watching {dirs}: {error}", { dirs, error: (e as Error).message });
      }
    })();
  }
  schedule(interval);
  return { kick: () => schedule(0), done };
}
