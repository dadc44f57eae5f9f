// CNI-mode pod attachments: for each meshed pod the runtime ADDs, a mark listener in its namespace,
// a mark_pod_ips entry, and the inbound programs on its interface. Records are kept in a state file
// so that a restarted daemon rebuilds the listeners with the same marks (the map entries never go
// stale) and DEL finds exactly what ADD made, keyed by container ID on both sides.
import type { DaemonRequest, DaemonResponse } from "../../cni/protocol.ts";
import { CniErrorCode } from "../../cni/spec.ts";
import { removePinTree } from "../bpf/pins.ts";
import { getLogger } from "../log/logger.ts";
import type { DatapathMaps } from "../maps/manager.ts";
import type { PodEntry, PodPolicy } from "../mesh/types.ts";
import {
  closeMarkListener,
  listenerNetnsCookie,
  type MarkListener,
  openMarkListener,
  randomMark,
} from "../netns/mark_listener.ts";
import { interfaceIpv4 } from "../netns/interface.ts";
import { withNetns } from "../netns/netns.ts";
import {
  attachIngress,
  detachIngress,
  type IngressHook,
  type IngressPrograms,
  type XdpModeOption,
} from "../xdp/attacher.ts";
import { pathExists } from "../util/fs.ts";
import { crashPoint } from "../util/crash_point.ts";
import { type AttachmentRecord, readAttachmentState, writeAttachmentState } from "./state_store.ts";

export type { AttachmentRecord };

const log = getLogger("cni");

export interface AttachmentsOptions {
  maps: DatapathMaps;
  programs: IngressPrograms;
  pinPath: string;
  stateFile: string;
  hook: IngressHook;
  xdpMode: XdpModeOption;
  hardwareChecksum: boolean;
  /** The pod as the daemon knows it (cache, then a direct fetch); undefined when unknown. */
  lookupPod(namespace: string, name: string): Promise<PodEntry | undefined>;
  /** Called after attachments changed, so the pod maps are reconciled. */
  onChange(): void;
}

interface Live {
  rec: AttachmentRecord;
  listener?: MarkListener;
  policy?: PodPolicy;
}

function safeName(containerId: string): string {
  return containerId.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 200);
}

/**
 * A pod's pin directory carries its IP as well as its container: when the state file is lost or
 * damaged, the running pod found by its IP takes its own pins back (the XDP link is updated in
 * place, never detached).
 */
function pinKeyFor(containerId: string, podIp: string): string {
  // bpffs refuses names with a dot.
  return `${safeName(containerId)}@${podIp.replaceAll(".", "_")}`;
}

function pinKeyIp(key: string): string | undefined {
  const ip = key.slice(key.lastIndexOf("@") + 1).replaceAll("_", ".");
  return key.includes("@") && /^\d+\.\d+\.\d+\.\d+$/.test(ip) ? ip : undefined;
}

/** Records the daemon made for running pods it found without a CNI ADD (their DEL never names them). */
export const SYNTHETIC_PREFIX = "found:";

export function isSynthetic(containerId: string): boolean {
  return containerId.startsWith(SYNTHETIC_PREFIX);
}

/** The namespace a path names (device and inode of the nsfs file), or undefined when it is gone. */
function nsIdentity(path: string): string | undefined {
  try {
    const st = Deno.statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

const TOMBSTONE_MS = 10 * 60_000;

/** What one pass of rediscovery did, for the caller's metrics, logs and health. */
export interface RediscoverResult {
  attached: { pod: string; netns: string; ip: string }[];
  failed: { pod: string; error: string }[];
}

export class Attachments {
  readonly #live = new Map<string, Live>();
  /** One chain per container: requests for different pods never wait on each other. */
  readonly #chains = new Map<string, Promise<unknown>>();
  readonly #busy = new Map<number, string>();
  /** Pin directories no record owns (a damaged state file), by key, with the pod IP they carry. */
  readonly #orphans = new Map<string, string | undefined>();
  /** Namespaces the runtime sent DEL for, until they are gone (or a while has passed). */
  readonly #tombstones = new Map<string, { path: string; until: number }>();
  #seq = 0;

  constructor(readonly opts: AttachmentsOptions) {}

  /**
   * Requests for one container are handled in order; those for different containers run side by
   * side. Each request's changes to the maps and the state file are made without an await in
   * between, so interleaved requests never see each other half done.
   */
  handle(req: DaemonRequest): Promise<DaemonResponse> {
    const key = req.containerId;
    const prev = this.#chains.get(key) ?? Promise.resolve();
    const n = ++this.#seq;
    if (req.podName) this.#busy.set(n, `${req.podNamespace}/${req.podName}`);
    const run = prev.then(() => this.#dispatch(req)).finally(() => this.#busy.delete(n));
    const tail = run.catch(() => {});
    this.#chains.set(key, tail);
    tail.then(() => {
      if (this.#chains.get(key) === tail) this.#chains.delete(key);
    });
    return run;
  }

  /** A record the daemon made itself for the namespace `netns` names, if any. */
  #syntheticFor(netns: string): Live | undefined {
    if (!netns) return undefined;
    const id = nsIdentity(netns);
    for (const l of this.#live.values()) {
      if (!isSynthetic(l.rec.containerId)) continue;
      if (l.rec.netns === netns || (id !== undefined && nsIdentity(l.rec.netns) === id)) return l;
    }
    return undefined;
  }

  /** The runtime names a pod the daemon attached on its own: the record takes the runtime's ID. */
  #adopt(live: Live, req: DaemonRequest): void {
    const old = live.rec.containerId;
    this.#live.delete(old);
    // The pins stay where they are: they are found by the record's pinDir, kept below.
    live.rec.pinKey ??= safeName(old);
    live.rec.containerId = req.containerId;
    if (req.ifName) live.rec.ifName = req.ifName;
    this.#live.set(req.containerId, live);
    this.#save();
    log.info("{id} is the pod {ns}/{name} attached as {old}; the record now carries the runtime's ID", {
      id: req.containerId,
      ns: live.rec.podNamespace,
      name: live.rec.podName,
      old,
    });
  }

  async #dispatch(req: DaemonRequest): Promise<DaemonResponse> {
    switch (req.op) {
      case "add":
        return await this.#add(req);
      case "del":
        return this.#del(req.containerId, req.netns);
      case "check":
        return this.#check(req);
      case "status":
        return { ok: true, detail: `${this.#live.size} pods attached` };
      case "gc": {
        const valid = new Set((req.validAttachments ?? []).map((a) => a.containerId));
        // The runtime never knew the daemon's own IDs; those records go with their namespace (sweep).
        const stale = [...this.#live.keys()].filter((id) => !valid.has(id) && !isSynthetic(id));
        for (const id of stale) this.#del(id);
        return { ok: true, detail: `removed ${stale.length} stale attachments` };
      }
      case "pods":
        // Answered by the daemon itself, from its pod table.
        return {
          ok: false,
          code: CniErrorCode.invalidEnv,
          msg: "the attachments do not answer pods requests",
        };
    }
  }

  #pinDir(rec: AttachmentRecord): string {
    return `${this.opts.pinPath}/pods/${rec.pinKey ?? safeName(rec.containerId)}`;
  }

  async #add(req: DaemonRequest): Promise<DaemonResponse> {
    const existing = this.#live.get(req.containerId);
    if (existing) return { ok: true, inMesh: true, podIp: existing.rec.podIp, detail: "already attached" };
    let entry: PodEntry | undefined;
    try {
      entry = await this.opts.lookupPod(req.podNamespace, req.podName);
    } catch (e) {
      // Not knowing is not "not meshed": the runtime retries, and a meshed pod never starts bare.
      const msg = `cannot tell whether pod ${req.podNamespace}/${req.podName} is in the mesh`;
      log.warn("ADD {id}: {msg}: {error}", { id: req.containerId, msg, error: (e as Error).message });
      return { ok: false, code: CniErrorCode.tryAgainLater, msg, details: (e as Error).message };
    }
    // Attached meanwhile by the repair pass (it found the namespace by the pod's IP).
    const again = this.#live.get(req.containerId) ?? this.#syntheticFor(req.netns);
    if (again) {
      if (again.rec.containerId !== req.containerId) this.#adopt(again, req);
      return { ok: true, inMesh: true, podIp: again.rec.podIp, detail: "already attached" };
    }
    if (!entry) {
      log.warn("ADD for {ns}/{name}: the pod is unknown to the daemon; treated as not in the mesh", {
        ns: req.podNamespace,
        name: req.podName,
      });
      return { ok: true, inMesh: false, detail: "pod unknown" };
    }
    if (!entry.inMesh) return { ok: true, inMesh: false };
    const podIp = req.podIps?.find((ip) => /^\d+\.\d+\.\d+\.\d+$/.test(ip)) ??
      (entry.ip || withNetns(req.netns, () => interfaceIpv4(req.ifName)));
    if (!podIp) {
      return {
        ok: false,
        code: CniErrorCode.tryAgainLater,
        msg: `pod ${req.podNamespace}/${req.podName} has no IPv4 address yet`,
      };
    }
    const taken = new Set(this.opts.maps.marks().keys());
    const rec: AttachmentRecord = {
      containerId: req.containerId,
      ifName: req.ifName,
      netns: req.netns,
      podNamespace: req.podNamespace,
      podName: req.podName,
      podUid: req.podUid,
      podIp,
      mark: randomMark((m) => taken.has(m)),
      hook: this.opts.hook,
      txChanged: false,
      createdAt: new Date().toISOString(),
      pinKey: pinKeyFor(req.containerId, podIp),
    };
    const live: Live = { rec, policy: entry.policy };
    // Recorded before anything is attached: a daemon killed half-way finds the record at restart and
    // finishes the attachment (or removes it with its namespace) instead of leaking filters and entries.
    this.#live.set(rec.containerId, live);
    this.#save();
    crashPoint("attach:recorded");
    try {
      this.#apply(live);
    } catch (e) {
      this.#live.delete(rec.containerId);
      this.#undo(live);
      this.#save();
      const msg = `attaching ${req.podNamespace}/${req.podName}: ${(e as Error).message}`;
      log.error(msg);
      return { ok: false, code: CniErrorCode.ioFailure, msg };
    }
    crashPoint("attach:applied");
    this.#save();
    this.opts.onChange();
    log.info("attached {ns}/{name} ip {ip} mark {mark} via {hook}", {
      ns: rec.podNamespace,
      name: rec.podName,
      ip: podIp,
      mark: rec.mark,
      hook: rec.hook,
    });
    return { ok: true, inMesh: true, podIp };
  }

  /** Listener, mark entry and ingress programs; idempotent, so restore() reuses it. */
  #apply(live: Live): void {
    const r = live.rec;
    live.listener ??= openMarkListener(r.netns, r.mark);
    crashPoint("attach:listener-open");
    this.opts.maps.putMark(r.mark, r.podIp);
    const cookie = listenerNetnsCookie(live.listener);
    r.netnsCookie = cookie.toString();
    this.opts.maps.putNetnsPod(cookie, r.podIp);
    // The daemon's current flags win over the record's: a restart with another --ingress-hook,
    // --xdp-mode or --hardware-checksum moves pods that were attached before it.
    r.hook = this.opts.hook;
    crashPoint("attach:before-ingress");
    const res = attachIngress(
      { netnsPath: r.netns, ifName: r.ifName, pinDir: this.#pinDir(r) },
      this.opts.programs,
      {
        hook: r.hook,
        xdpMode: this.opts.xdpMode,
        hardwareChecksum: this.opts.hardwareChecksum,
        txChangedEarlier: r.txChanged,
      },
    );
    r.txChanged = res.txChanged;
  }

  #undo(live: Live): void {
    const r = live.rec;
    if (live.listener) closeMarkListener(live.listener);
    live.listener = undefined;
    this.opts.maps.deleteMark(r.mark);
    if (r.netnsCookie) this.opts.maps.deleteNetnsPod(BigInt(r.netnsCookie));
    try {
      detachIngress(
        { netnsPath: r.netns, ifName: r.ifName, pinDir: this.#pinDir(r) },
        r.txChanged,
      );
    } catch (e) {
      log.warn("detaching {id}: {error}", { id: r.containerId, error: (e as Error).message });
    }
  }

  #del(containerId: string, netns = ""): DaemonResponse {
    // The runtime removes the namespace only after DEL, and the pod may stay listed while it
    // terminates: the repair pass must not attach it again in between.
    const id = netns ? nsIdentity(netns) : undefined;
    if (id) this.#tombstones.set(id, { path: netns, until: Date.now() + TOMBSTONE_MS });
    const live = this.#live.get(containerId) ?? this.#syntheticFor(netns);
    if (!live) return { ok: true, detail: "nothing attached" };
    containerId = live.rec.containerId;
    // Forgotten before it is undone: a daemon killed in between leaves pins and entries no record
    // owns, which the next start removes, rather than a record of a pod being deleted.
    this.#live.delete(containerId);
    this.#save();
    crashPoint("detach:forgotten");
    this.#undo(live);
    this.opts.onChange();
    log.info("detached {ns}/{name}", { ns: live.rec.podNamespace, name: live.rec.podName });
    return { ok: true };
  }

  #check(req: DaemonRequest): DaemonResponse {
    const found = this.#syntheticFor(req.netns);
    if (!this.#live.has(req.containerId) && found) this.#adopt(found, req);
    const live = this.#live.get(req.containerId);
    if (!live) return { ok: true, detail: "not attached" };
    const problems: string[] = [];
    if (!live.listener) problems.push("mark listener missing");
    if (this.opts.maps.marks().get(live.rec.mark) !== live.rec.podIp) problems.push("mark entry missing");
    if (!pathExists(live.rec.netns)) problems.push("network namespace gone");
    return problems.length
      ? {
        ok: false,
        code: CniErrorCode.ioFailure,
        msg: `attachment of ${req.containerId}: ${problems.join(", ")}`,
      }
      : { ok: true };
  }

  /**
   * Rebuilds from the state file after a restart; drops records whose namespace is gone. A damaged
   * file (and previous copy) detaches nothing: pins no record owns are kept for the pods the next
   * repair pass finds by IP, and only what is still unclaimed after that pass is removed.
   */
  restore(): { restored: number; dropped: number; problem?: string } {
    const state = readAttachmentState(this.opts.stateFile);
    let recs: AttachmentRecord[] = [];
    let problem: string | undefined;
    if (state.kind === "ok") {
      recs = state.records;
      if (state.from === "previous") problem = `${state.problem}; used the previous copy`;
    } else if (state.kind === "invalid") {
      problem = `${state.problem}; rebuilding from what is attached`;
    }
    if (problem) log.error("attachment state: {problem}", { problem });
    let restored = 0, dropped = 0;
    for (const rec of recs) {
      const live: Live = { rec };
      if (!pathExists(rec.netns)) {
        this.#undo(live);
        dropped++;
        continue;
      }
      try {
        this.#apply(live);
        this.#live.set(rec.containerId, live);
        restored++;
      } catch (e) {
        log.error("restoring {ns}/{name}: {error}", {
          ns: rec.podNamespace,
          name: rec.podName,
          error: (e as Error).message,
        });
        this.#undo(live);
        dropped++;
      }
    }
    const owned = new Set([...this.#live.values()].map((l) => this.#keyOf(l.rec)));
    try {
      for (const e of Deno.readDirSync(`${this.opts.pinPath}/pods`)) {
        if (!owned.has(e.name)) this.#orphans.set(e.name, pinKeyIp(e.name));
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (!problem) {
      // The file is the whole truth: anything it does not name was being removed (or never added)
      // when the previous daemon stopped.
      dropped += this.dropOrphans(new Set());
    } else {
      // Pins without the IP in their name cannot be matched to a pod: they would block attaching it.
      for (const [key, ip] of this.#orphans) {
        if (ip === undefined) {
          removePinTree(`${this.opts.pinPath}/pods/${key}`);
          this.#orphans.delete(key);
          dropped++;
        }
      }
    }
    this.#save();
    return { restored, dropped, problem };
  }

  #keyOf(rec: AttachmentRecord): string {
    return rec.pinKey ?? safeName(rec.containerId);
  }

  /**
   * Removes pins and mark entries no record owns, except those of `keepIps` (meshed pods not yet
   * found). Returns how many pin directories went.
   */
  dropOrphans(keepIps: ReadonlySet<string>): number {
    let n = 0;
    for (const [key, ip] of this.#orphans) {
      if (ip !== undefined && keepIps.has(ip)) continue;
      removePinTree(`${this.opts.pinPath}/pods/${key}`);
      this.#orphans.delete(key);
      n++;
    }
    const ownedMarks = new Set([...this.#live.values()].map((l) => l.rec.mark));
    for (const [mark, ip] of this.opts.maps.marks()) {
      if (!ownedMarks.has(mark) && !keepIps.has(ip)) this.opts.maps.deleteMark(mark);
    }
    return n;
  }

  /** Pins found at restore that no record owns yet. */
  get orphanCount(): number {
    return this.#orphans.size;
  }

  /**
   * Attaches meshed pods that run but have no record (a lost state file, a node where CNI mode was
   * just switched on): their namespaces are found by the pod IP on an interface inside them.
   * Records made this way carry a synthetic container ID; their DEL never comes, so the sweep removes
   * them when the namespace goes.
   */
  rediscover(
    entries: PodEntry[],
    netnsDirs: string[],
    busy: ReadonlySet<string> = new Set(),
  ): RediscoverResult {
    const out: RediscoverResult = { attached: [], failed: [] };
    const attached = new Set([...this.#live.values()].map((l) => l.rec.podIp));
    const wanted = new Map(
      entries.filter((e) => e.inMesh && e.ip && !attached.has(e.ip) && !busy.has(`${e.namespace}/${e.name}`))
        .map((e) => [e.ip, e]),
    );
    const now = Date.now();
    // Namespace inode numbers are reused: a tombstone goes with its namespace.
    for (const [id, t] of this.#tombstones) {
      if (t.until < now || nsIdentity(t.path) !== id) this.#tombstones.delete(id);
    }
    if (wanted.size === 0) return out;
    const seen = new Set<string>();
    for (const dir of netnsDirs) {
      let names: string[];
      try {
        names = [...Deno.readDirSync(dir)].map((e) => e.name);
      } catch {
        continue;
      }
      for (const name of names) {
        const path = `${dir}/${name}`;
        // Directories can name one place twice (/var/run is /run on most hosts).
        const id = nsIdentity(path);
        if (id === undefined || seen.has(id) || this.#tombstones.has(id)) continue;
        seen.add(id);
        let hit: { ifName: string; ip: string } | undefined;
        try {
          hit = withNetns(path, () => {
            for (const ifName of ["eth0", "net1"]) {
              const ip = interfaceIpv4(ifName);
              if (ip && wanted.has(ip)) return { ifName, ip };
            }
            return undefined;
          });
        } catch {
          continue; // not a namespace file, or gone
        }
        if (!hit) continue;
        const e = wanted.get(hit.ip)!;
        wanted.delete(hit.ip);
        const marks = this.opts.maps.marks();
        const taken = new Set(marks.keys());
        const ownedMarks = new Set([...this.#live.values()].map((l) => l.rec.mark));
        // A pod whose record was lost keeps its mark and its pins: nothing it has is detached.
        const oldMark = [...marks].find(([m, ip]) => ip === hit.ip && !ownedMarks.has(m))?.[0];
        const oldKey = [...this.#orphans].find(([, ip]) => ip === hit.ip)?.[0];
        if (oldKey) this.#orphans.delete(oldKey);
        const containerId = `${SYNTHETIC_PREFIX}${name}`;
        const live: Live = {
          rec: {
            containerId,
            pinKey: oldKey ?? pinKeyFor(containerId, hit.ip),
            ifName: hit.ifName,
            netns: path,
            podNamespace: e.namespace,
            podName: e.name,
            podUid: e.uid,
            podIp: hit.ip,
            mark: oldMark ?? randomMark((m) => taken.has(m)),
            hook: this.opts.hook,
            // Unknown for adopted pins; offload is switched off again below if it is on.
            txChanged: false,
            createdAt: new Date().toISOString(),
          },
          policy: e.policy,
        };
        try {
          this.#apply(live);
          this.#live.set(live.rec.containerId, live);
          out.attached.push({ pod: `${e.namespace}/${e.name}`, netns: path, ip: hit.ip });
        } catch (err) {
          this.#undo(live);
          out.failed.push({ pod: `${e.namespace}/${e.name}`, error: (err as Error).message });
        }
      }
    }
    if (out.attached.length) {
      this.#save();
      this.opts.onChange();
    }
    return out;
  }

  /** Pods with a request in flight: the repair pass leaves them to that request. */
  get busyPods(): Set<string> {
    return new Set(this.#busy.values());
  }

  /** Drops attachments whose namespace disappeared without a DEL (runtime crash, lost DEL). */
  sweep(): number {
    const gone = [...this.#live.values()].filter((l) => !pathExists(l.rec.netns)).map((l) =>
      l.rec.containerId
    );
    for (const id of gone) this.#del(id);
    return gone.length;
  }

  /** Pod IP → policy of attached pods (policy refreshed from the pod table when known). */
  policies(current: (ns: string, name: string) => PodEntry | undefined): Map<string, PodPolicy | undefined> {
    const out = new Map<string, PodPolicy | undefined>();
    for (const l of this.#live.values()) {
      const e = current(l.rec.podNamespace, l.rec.podName);
      if (e) l.policy = e.policy;
      out.set(l.rec.podIp, l.policy);
    }
    return out;
  }

  records(): AttachmentRecord[] {
    return [...this.#live.values()].map((l) => ({ ...l.rec }));
  }

  /** Closes listeners; map entries, pins and filters stay for the next daemon. */
  close(): void {
    for (const l of this.#live.values()) {
      if (l.listener) closeMarkListener(l.listener);
      l.listener = undefined;
    }
  }

  /** Removes every attachment (uninstall). */
  removeAll(): number {
    const ids = [...this.#live.keys()];
    for (const id of ids) this.#del(id);
    return ids.length;
  }

  #save(): void {
    writeAttachmentState(this.opts.stateFile, this.records());
  }
}
