// Loads the datapath's objects, attaches the node-wide programs and keeps everything pinned under one
// bpffs directory:
//   <pin>/maps/<map>                  every map, shared by all objects and reused by the next daemon
//   <pin>/links/<cgroup id>/<hook>    cgroup links; a pinned link outlives the daemon
//   <pin>/pods/<key>/xdp              per-pod XDP links (CNI mode, src/xdp)
//   <pin>/progs/<build key>/<program> the loaded programs, for the next daemon of the same build
// A restarted daemon of the same build reopens the pinned programs instead of verifying them again
// (about half a second); a new build loads its own and swaps them into the pinned links atomically,
// so interception never lapses. Uninstall removes the tree, which detaches everything.
import { BpfObject, PinMismatchError } from "../bpf/object.ts";
import { type AttachableProgram, attachCgroup, BpfLink } from "../bpf/link.ts";
import { PinnedProgram, pinProgram } from "../bpf/pinned_program.ts";
import { attachTypeName } from "../bpf/types.ts";
import type { IngressPrograms } from "../xdp/attacher.ts";
import { VERSION } from "../version.ts";
import { attachSkMsg } from "../bpf/prog_attach.ts";
import { ensureBpffsDir, isPinned, removePinTree } from "../bpf/pins.ts";
import { PinnedMap } from "../bpf/map_fd.ts";
import { getLogger } from "../log/logger.ts";
import {
  DATAPATH_MAPS,
  type DatapathMapHandles,
  DatapathMaps,
  MAP_NAMES,
  type MapName,
  OPTIONAL_DATAPATH_MAPS,
  type RawMap,
  type RawPerCpuHash,
} from "../maps/manager.ts";
import { TABLE_NAMES } from "../maps/layouts.ts";
import {
  catalogPrograms,
  CGROUP_PROGRAMS,
  INGRESS_PROGRAMS,
  OBJECTS,
  objectsDir,
  SK_MSG_PROGRAM,
  STATS_PROGRAM,
} from "./catalog.ts";
import { MapStats } from "../bpf/map_stats.ts";
import { pathExists } from "../util/fs.ts";
import { fingerprint } from "../util/hash.ts";
import { MAPS } from "../generated/bpf_types.ts";
import { mapInfoByFd, mapInfoById, progInfo } from "../bpf/info.ts";

const log = getLogger("datapath");

export interface DatapathOptions {
  pinPath: string;
  cgroupPath: string;
  dnsCapture: boolean;
  objectsDir?: string;
  /**
   * A pinned map whose type, sizes or capacity differ from this build's (an upgrade changed a struct
   * in bpf/common.h) is unpinned and created anew instead of failing the load. The caller refills
   * it; programs still attached keep the old map until their links are swapped.
   */
  replaceIncompatiblePins?: boolean;
  /** Capacity of the connection tables (pair_orig_dst, sock_refs, sock_pair_map); default 65536. */
  connTableSize?: number;
  /** Capacity of the inbound handshake LRU (ingress_syn); default 65536. */
  synTableSize?: number;
}

export const DEFAULT_TABLE_SIZE = 65536;
const CONN_TABLES = ["pair_orig_dst", "sock_refs", "sock_pair_map"] as const satisfies readonly MapName[];

/** DatapathMaps over the maps `open` finds (undefined: not there). */
function datapathMaps(open: (name: MapName) => (RawMap & RawPerCpuHash) | undefined): DatapathMaps {
  const handles: Partial<Record<MapName, RawMap & RawPerCpuHash>> = {};
  for (const name of [...DATAPATH_MAPS, ...OPTIONAL_DATAPATH_MAPS]) {
    const m = open(name);
    if (m) handles[name] = m;
  }
  return new DatapathMaps(handles as DatapathMapHandles);
}

/**
 * Where connect() and inbound SYNs start being refused: below the connection table's capacity by room
 * for the connections already past that check but not yet established (each needs its entry then).
 */
export function connAdmitLimit(connTableSize: number): number {
  return connTableSize - Math.max(256, Math.floor(connTableSize / 64));
}

/** One table's fill, for metrics and status. */
export interface TableFill {
  map: string;
  /** Undefined where it cannot be had without walking the map (a kernel before 6.6, an LRU). */
  entries?: number;
  capacity: number;
}

export interface AttachReport {
  attached: string[];
  updated: string[];
  /** Already running the program this daemon would attach. */
  kept: string[];
  removed: string[];
}

/**
 * Names one build's programs as loaded with one set of map sizes: a daemon reuses pinned programs
 * only under the key it would pin them under itself.
 */
export function programSetKey(
  files: { name: string; bytes: Uint8Array }[],
  sizes: Record<string, number>,
): string {
  const head = new TextEncoder().encode(`${VERSION}\n${JSON.stringify(sizes)}\n${files.map((f) => f.name)}`);
  return fingerprint([head, ...files.map((f) => f.bytes)]);
}

/**
 * The maps of `names` pinned under `<pin>/maps` (the ones not pinned are left out), all closed again
 * if one fails to open; throws naming the datapath maps that are missing.
 */
function openMapPins<N extends string>(pinPath: string, names: readonly N[]): Map<N, PinnedMap> {
  const out = new Map<N, PinnedMap>();
  const closeAll = () => out.forEach((m) => m.close());
  try {
    for (const name of names) {
      const path = `${pinPath}/maps/${name}`;
      if (isPinned(path)) out.set(name, PinnedMap.open(path));
    }
  } catch (e) {
    closeAll();
    throw e;
  }
  const found = new Set<string>(out.keys());
  const missing = DATAPATH_MAPS.filter((n) => !found.has(n));
  if (missing.length) {
    closeAll();
    throw new Error(`no datapath pinned at ${pinPath} (missing maps: ${missing.join(", ")})`);
  }
  return out;
}

function cgroupId(path: string): string {
  const st = Deno.statSync(path);
  if (!st.isDirectory) throw new Error(`cgroup path ${path} is not a directory`);
  return String(st.ino);
}

function listDir(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

export class Datapath implements Disposable {
  readonly #objects = new Map<string, BpfObject>();
  /** Every catalog program by "object/program", loaded now or reopened from its pin. */
  readonly #programs = new Map<string, AttachableProgram>();
  readonly #pinnedPrograms: PinnedProgram[] = [];
  readonly #pinnedMaps: PinnedMap[] = [];
  readonly #mapHandles = new Map<
    MapName,
    RawMap & RawPerCpuHash & { readonly fd: number; readonly maxEntries: number }
  >();
  readonly maps: DatapathMaps;
  /**
   * Whether the programs were reopened from the pins a previous daemon of this same build left,
   * rather than verified and loaded again.
   */
  readonly reusedPrograms: boolean;

  private constructor(readonly opts: DatapathOptions) {
    const dir = opts.objectsDir ?? objectsDir();
    ensureBpffsDir(`${opts.pinPath}/maps`);
    // Read first and open from memory: in a compiled executable the objects are embedded files
    // that only Deno's own file APIs can read.
    const files = OBJECTS.map((name) => ({ name, bytes: Deno.readFileSync(`${dir}/${name}.bpf.o`) }));
    const key = programSetKey(files, this.#tableSizes());
    try {
      this.reusedPrograms = this.#reopenPinned(key);
      if (!this.reusedPrograms) this.#loadObjects(files, key);
    } catch (e) {
      this.close();
      throw e;
    }
    this.maps = datapathMaps((n) => this.#mapHandles.get(n));
    const counted: string[] = [...TABLE_NAMES, "table_fill" satisfies MapName];
    if (this.replacedPins.some((n) => counted.includes(n))) {
      // A table replaced by an empty one: its count starts again (a replaced counter alone cannot be
      // rebuilt, and reads low until the connections it missed have closed).
      this.maps.resetTableFill();
    }
    this.#objectsDir = dir;
  }

  #tableSizes(): Record<string, number> {
    const conn = this.opts.connTableSize ?? DEFAULT_TABLE_SIZE;
    return {
      ...Object.fromEntries(CONN_TABLES.map((m) => [m, conn])),
      ingress_syn: this.opts.synTableSize ?? DEFAULT_TABLE_SIZE,
    };
  }

  /** Verifies and loads every object; maps come from the pins when they exist and fit. */
  #loadObjects(files: { name: string; bytes: Uint8Array }[], key: string): void {
    const sizes = this.#tableSizes();
    for (const { name, bytes } of files) {
      const obj = BpfObject.openMem(bytes, `${name}.bpf.o`, { pinMapsDir: `${this.opts.pinPath}/maps` });
      this.#objects.set(name, obj);
      // Every object declares every map, and libbpf reuses a pin only if the sizes agree.
      for (const [m, n] of Object.entries(sizes)) obj.map(m).setMaxEntries(n);
      this.#load(obj);
    }
    const any = this.#objects.get("connect")!;
    for (const name of MAP_NAMES) this.#mapHandles.set(name, any.map(name));
    for (const c of catalogPrograms()) {
      const prog = this.#objects.get(c.object)!.program(c.program);
      if (c.attachType !== undefined && prog.attachType !== c.attachType) {
        throw new Error(
          `${c.object}.bpf.o: ${c.program} is loaded for ${attachTypeName(prog.attachType)}, ` +
            `the catalog attaches it at ${attachTypeName(c.attachType)}`,
        );
      }
      this.#programs.set(`${c.object}/${c.program}`, prog);
    }
    this.#pinPrograms(key);
  }

  /**
   * Pins this load's programs under their key, for the next daemon of the same build, and drops the
   * sets of other builds (programs still attached somewhere live on in their links). Only a cache:
   * when it fails the next start verifies again.
   */
  #pinPrograms(key: string): void {
    const root = `${this.opts.pinPath}/progs`;
    const tmp = `${root}/tmp-${key}`;
    try {
      ensureBpffsDir(root);
      removePinTree(tmp);
      for (const c of catalogPrograms()) {
        pinProgram(this.#programs.get(`${c.object}/${c.program}`)!, `${tmp}/${c.program}`);
      }
      removePinTree(`${root}/${key}`);
      // A rename is atomic: a crash leaves either a whole set or a tmp- directory the next load clears.
      Deno.renameSync(tmp, `${root}/${key}`);
      this.#dropOtherSets(key);
    } catch (e) {
      removePinTree(tmp);
      log.warn("could not pin the loaded programs ({error}): the next start verifies them again", {
        error: (e as Error).message,
      });
    }
  }

  /**
   * Reopens the programs a previous daemon of this build pinned under `key`, with the maps pinned
   * now. They are used only if every map they were loaded with is still the one pinned (a replaced or
   * removed map pin means they would write where nobody reads). False: load instead.
   */
  #reopenPinned(key: string): boolean {
    const dir = `${this.opts.pinPath}/progs/${key}`;
    if (!pathExists(dir)) return false;
    try {
      // Every pinned map counts for the check, socket storage included, which has no handle here.
      const pinned = openMapPins(this.opts.pinPath, Object.keys(MAPS));
      this.#pinnedMaps.push(...pinned.values());
      for (const name of MAP_NAMES) {
        const m = pinned.get(name);
        if (m) this.#mapHandles.set(name, m);
      }
      const mapIds = new Set(this.#pinnedMaps.map((m) => m.info.id));
      for (const c of catalogPrograms()) {
        const prog = PinnedProgram.open(`${dir}/${c.program}`, c.attachType);
        this.#pinnedPrograms.push(prog);
        const stale = prog.mapIds().filter((id) => !mapIds.has(id));
        if (stale.length) {
          const names = stale.map((id) => {
            try {
              return mapInfoById(id).name;
            } catch {
              return `map id ${id}`;
            }
          });
          throw new Error(`${c.program} was loaded with ${names.join(", ")}, no longer the pinned one`);
        }
        this.#programs.set(`${c.object}/${c.program}`, prog);
      }
      this.#dropOtherSets(key);
      log.info("programs reopened from their pins ({key}): nothing to verify", { key });
      return true;
    } catch (e) {
      log.info("pinned programs not reused ({reason}): loading them", { reason: (e as Error).message });
      this.#closeReopened();
      return false;
    }
  }

  /** Sets of other builds, and a set a crash left half pinned, have no use once `key`'s is in. */
  #dropOtherSets(key: string): void {
    const root = `${this.opts.pinPath}/progs`;
    for (const other of listDir(root)) if (other !== key) removePinTree(`${root}/${other}`);
  }

  #closeReopened(): void {
    for (const p of this.#pinnedPrograms.splice(0)) p.close();
    for (const m of this.#pinnedMaps.splice(0)) m.close();
    this.#programs.clear();
    this.#mapHandles.clear();
  }

  readonly #objectsDir: string;

  /**
   * The element-count iterator, loaded at the first scrape rather than at start: its verification
   * (about 30 ms) would otherwise delay every start, restarts included, for something only /metrics
   * and `status` read.
   */
  #mapStats(): MapStats | undefined {
    if (this.#statsTried) return this.#stats;
    this.#statsTried = true;
    try {
      const bytes = Deno.readFileSync(`${this.#objectsDir}/${STATS_PROGRAM.object}.bpf.o`);
      this.#stats = MapStats.load(bytes, STATS_PROGRAM.program);
    } catch (e) {
      log.info(
        "per-map element counts unavailable ({error}); table fill comes from the programs' own counts",
        {
          error: (e as Error).message.split("\n")[0],
        },
      );
    }
    return this.#stats;
  }

  #statsTried = false;
  #stats?: MapStats;
  #mapIds: Partial<Record<MapName, number>> = {};

  /**
   * How full each map is, without walking any of them: the kernel's own element counts where it has
   * them (6.6+), else the programs' counts for the connection tables.
   */
  tableFills(): TableFill[] {
    const kernel = this.#mapStats()?.counts();
    const own = kernel ? undefined : this.maps.tableFill();
    const out: TableFill[] = [];
    for (const name of MAP_NAMES) {
      const m = this.#mapHandles.get(name);
      if (!m) continue;
      let entries: number | undefined;
      if (kernel) entries = kernel.get(this.#mapIds[name] ??= mapInfoByFd(m.fd).id);
      else if (own && name in own) entries = own[name as keyof typeof own];
      out.push({ map: name, entries, capacity: m.maxEntries });
    }
    return out;
  }

  /** Names of the maps whose incompatible pins this load replaced. */
  readonly replacedPins: string[] = [];

  #load(obj: BpfObject): void {
    // Each map's pin is replaced at most once, so the loop ends.
    for (;;) {
      try {
        obj.load();
        return;
      } catch (e) {
        if (
          !this.opts.replaceIncompatiblePins || !(e instanceof PinMismatchError) ||
          this.replacedPins.includes(e.mapName)
        ) {
          throw e;
        }
        log.warn(
          "pinned map {map} does not match this build ({differences}): replacing it, contents are rebuilt",
          {
            map: e.mapName,
            differences: e.differences.join("; "),
          },
        );
        Deno.removeSync(e.pinPath);
        this.replacedPins.push(e.mapName);
      }
    }
  }

  /** Opens and loads every object; maps come from the pins when they exist. */
  static load(opts: DatapathOptions): Datapath {
    return new Datapath(opts);
  }

  program(object: string, name: string): AttachableProgram {
    const prog = this.#programs.get(`${object}/${name}`);
    if (!prog) throw new Error(`no datapath program ${name} in ${object}`);
    return prog;
  }

  ingressPrograms(): IngressPrograms {
    const o = INGRESS_PROGRAMS.object;
    return {
      xdp: this.program(o, INGRESS_PROGRAMS.xdp),
      tcIngress: this.program(o, INGRESS_PROGRAMS.tcIngress),
      tcEgress: this.program(o, INGRESS_PROGRAMS.tcEgress),
    };
  }

  /**
   * Attaches (or, when pinned links exist, atomically updates) every node-wide program. Links of a
   * previous cgroup path and programs of features now off are removed after the new ones are in.
   */
  attach(): AttachReport {
    const report: AttachReport = { attached: [], updated: [], kept: [], removed: [] };
    const linksRoot = `${this.opts.pinPath}/links`;
    const id = cgroupId(this.opts.cgroupPath);
    const dir = `${linksRoot}/${id}`;
    ensureBpffsDir(dir);
    const wanted = CGROUP_PROGRAMS.filter((p) =>
      !p.feature || (p.feature === "dns-capture" && this.opts.dnsCapture)
    );
    for (const p of wanted) {
      const prog = this.program(p.object, p.program);
      const pin = `${dir}/${p.hook}`;
      if (isPinned(pin)) {
        using link = BpfLink.openPinned(pin);
        // A restart of the same build reopened the very programs the links run: nothing to swap.
        if (link.info().progId === progInfo(prog).id) {
          report.kept.push(p.hook);
          continue;
        }
        link.update(prog);
        report.updated.push(p.hook);
      } else {
        using link = attachCgroup(prog, this.opts.cgroupPath);
        link.pin(pin);
        report.attached.push(p.hook);
      }
    }
    for (const hook of listDir(dir)) {
      if (!wanted.some((p) => p.hook === hook)) {
        Deno.removeSync(`${dir}/${hook}`);
        report.removed.push(hook);
      }
    }
    for (const other of listDir(linksRoot)) {
      if (other !== id) {
        report.removed.push(...listDir(`${linksRoot}/${other}`).map((h) => `${h} (cgroup ${other})`));
        removePinTree(`${linksRoot}/${other}`);
      }
    }
    // The verdict program belongs to the (pinned) sockhash; attaching again replaces the old one.
    const skmsg = this.program(SK_MSG_PROGRAM.object, SK_MSG_PROGRAM.program);
    attachSkMsg(skmsg, this.#mapHandles.get(SK_MSG_PROGRAM.map)!.fd);
    log.info(
      "datapath attached to {cgroup}: new {attached}, updated {updated}, kept {kept}, removed {removed}",
      {
        cgroup: this.opts.cgroupPath,
        ...report,
      },
    );
    return report;
  }

  close(): void {
    this.#stats?.close();
    this.#stats = undefined;
    this.#closeReopened();
    for (const o of this.#objects.values()) o.close();
    this.#objects.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** The maps of a running (or left-behind) datapath, opened from their pins, for the CLI. */
export class PinnedDatapathMaps implements Disposable {
  readonly #maps: Map<MapName, PinnedMap>;
  readonly maps: DatapathMaps;

  constructor(readonly pinPath: string) {
    this.#maps = openMapPins(pinPath, MAP_NAMES);
    this.maps = datapathMaps((n) => this.#maps.get(n));
  }

  map(name: MapName): PinnedMap | undefined {
    return this.#maps.get(name);
  }

  close(): void {
    for (const m of this.#maps.values()) m.close();
    this.#maps.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export interface PinnedLinkInfo {
  cgroupId: string;
  hook: string;
  path: string;
}

export function pinnedLinks(pinPath: string): PinnedLinkInfo[] {
  const out: PinnedLinkInfo[] = [];
  for (const id of listDir(`${pinPath}/links`)) {
    for (const hook of listDir(`${pinPath}/links/${id}`)) {
      out.push({ cgroupId: id, hook, path: `${pinPath}/links/${id}/${hook}` });
    }
  }
  return out;
}

/** Removes every pin (links detach, maps are freed once nothing holds them); 0 when nothing was there. */
export function uninstallDatapath(pinPath: string): number {
  return removePinTree(pinPath);
}
