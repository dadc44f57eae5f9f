// Finding the network namespaces of this node's pods without the CNI telling us: every namespace a
// runtime keeps a file for (the netns dirs) or a process lives in (/proc/[pid]/ns/net), read once for
// the IPv4 addresses on its interfaces and its namespace cookie, which is the key the BPF programs
// see (bpf_get_netns_cookie). Reading a namespace means entering it, so results are cached by nsfs
// inode and only namespaces that are new, or that hold no wanted address yet, are read again.
import { LibcError } from "../ffi/errors.ts";
import { AF_INET, closeFd, ioctlPtr, SOCK_DGRAM, socketFd } from "../ffi/libc.ts";
import { socketNetnsCookie } from "./cookie.ts";
import { NetnsError, withNetns } from "./netns.ts";

const SIOCGIFCONF = 0x8912;
const IFNAMSIZ = 16;
/** struct ifreq on 64-bit Linux. */
const IFREQ_SIZE = 40;
/** struct ifconf { int ifc_len; (4 bytes padding) char *ifc_buf; } */
const IFCONF_SIZE = 16;

export interface NetnsAddress {
  ifName: string;
  ip: string;
}

/** What one read of a namespace found. */
export interface NetnsRead {
  cookie: bigint;
  addresses: NetnsAddress[];
}

/**
 * The IPv4 addresses of every interface of the calling thread's namespace (SIOCGIFCONF lists each
 * address with its label, whether the interface is up or not) and the namespace cookie, through one
 * socket.
 */
export function readCurrentNetns(): NetnsRead {
  const fd = socketFd(AF_INET, SOCK_DGRAM);
  try {
    let slots = 8;
    for (;;) {
      const buf = new Uint8Array(slots * IFREQ_SIZE);
      const ifc = new Uint8Array(IFCONF_SIZE);
      const dv = new DataView(ifc.buffer);
      dv.setInt32(0, buf.length, true);
      dv.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf))), true);
      ioctlPtr(fd, SIOCGIFCONF, ifc);
      const len = dv.getInt32(0, true);
      // A full buffer may have cut the list short: the kernel only fills whole entries.
      if (len >= buf.length && slots < 4096) {
        slots *= 4;
        continue;
      }
      const addresses: NetnsAddress[] = [];
      for (let off = 0; off + IFREQ_SIZE <= len; off += IFREQ_SIZE) {
        const name = buf.subarray(off, off + IFNAMSIZ);
        const end = name.indexOf(0);
        const ifName = new TextDecoder().decode(end < 0 ? name : name.subarray(0, end));
        // ifr_addr is a struct sockaddr_in: family, port, then the address.
        const ip = Array.from(buf.subarray(off + IFNAMSIZ + 4, off + IFNAMSIZ + 8)).join(".");
        addresses.push({ ifName, ip });
      }
      return { cookie: socketNetnsCookie(fd), addresses };
    }
  } finally {
    closeFd(fd);
  }
}

/** Enters `path` (a netns file or /proc/PID/ns/net) and reads it. */
export function readNetns(path: string): NetnsRead {
  return withNetns(path, readCurrentNetns);
}

/** Addresses that can name a pod: never loopback (test set-ups and node-local DNS put extra ones there). */
export function podAddresses(addresses: NetnsAddress[]): string[] {
  const out = new Set<string>();
  for (const a of addresses) {
    if (a.ifName === "lo" || a.ifName.startsWith("lo:") || a.ip.startsWith("127.") || a.ip === "0.0.0.0") {
      continue;
    }
    out.add(a.ip);
  }
  return [...out];
}

/**
 * One way a namespace was seen in a scan. A witness that is still there with the same inode in the
 * next scan proves the namespace is the one read before: nsfs inode numbers are reused as soon as a
 * namespace is freed, so the inode alone could hand a new pod the cookie of a deleted one.
 */
export type Witness = string;

/** A namespace as listed by one scan, before it is read. */
export interface NetnsCandidate {
  /** nsfs inode number, the dedupe key. */
  ino: string;
  /** Paths to enter it by, netns files first (they outlive any one process). */
  paths: string[];
  witnesses: Witness[];
}

export interface ListSources {
  netnsDirs: string[];
  /** The proc mount to scan for processes, or undefined to scan none. */
  proc?: string;
  /** Inodes never to list: the daemon's own (host) namespace. */
  exclude: Set<string>;
}

export interface FsOps {
  readDir(path: string): Iterable<string>;
  /** stat, following links: the nsfs inode and device of a bind-mounted namespace file. */
  stat(path: string): { ino: number; dev: number; ctimeMs: number } | undefined;
  readLink(path: string): string | undefined;
}

export const realFs: FsOps = {
  readDir(path) {
    try {
      return [...Deno.readDirSync(path)].map((e) => e.name);
    } catch {
      return [];
    }
  },
  stat(path) {
    try {
      const s = Deno.statSync(path);
      return { ino: s.ino ?? 0, dev: s.dev, ctimeMs: s.ctime?.getTime() ?? 0 };
    } catch {
      return undefined;
    }
  },
  readLink(path) {
    try {
      return Deno.readLinkSync(path);
    } catch {
      return undefined;
    }
  },
};

/** The inode in a /proc/PID/ns/net link text, "net:[4026531840]". */
export function parseNsLink(link: string | undefined): string | undefined {
  const m = link && /^net:\[(\d+)\]$/.exec(link);
  return m ? m[1] : undefined;
}

export interface Listing {
  candidates: Map<string, NetnsCandidate>;
  /** Files in the netns dirs that are not (yet) a mounted namespace: a runtime creating one. */
  pending: string[];
}

/**
 * Every namespace of the node except the excluded ones, deduplicated by inode. `nsfsDev` is the
 * device of nsfs: a runtime creates the file in a netns dir first and bind-mounts the namespace on
 * it after, and until then the file is an empty regular file.
 */
export function listNamespaces(src: ListSources, nsfsDev: number, fs: FsOps = realFs): Listing {
  const candidates = new Map<string, NetnsCandidate>();
  const pending: string[] = [];
  const add = (ino: string, path: string, witness: Witness) => {
    if (src.exclude.has(ino)) return;
    let c = candidates.get(ino);
    if (!c) candidates.set(ino, c = { ino, paths: [], witnesses: [] });
    c.paths.push(path);
    c.witnesses.push(witness);
  };
  for (const dir of src.netnsDirs) {
    for (const name of fs.readDir(dir)) {
      const path = `${dir}/${name}`;
      const st = fs.stat(path);
      if (!st) continue;
      if (st.dev !== nsfsDev) {
        pending.push(path);
        continue;
      }
      add(String(st.ino), path, `${path}@${st.ctimeMs}`);
    }
  }
  if (src.proc) {
    for (const name of fs.readDir(src.proc)) {
      if (!/^\d+$/.test(name)) continue;
      const path = `${src.proc}/${name}/ns/net`;
      const ino = parseNsLink(fs.readLink(path));
      if (ino) add(ino, path, `pid:${name}`);
    }
  }
  return { candidates, pending };
}

/** A namespace as the last read of it found it. */
export interface NetnsInfo {
  ino: string;
  /** The path it was read through (a netns file when there is one). */
  path: string;
  cookie: bigint;
  ips: string[];
  /** When it was first listed (ms, the scan clock). */
  firstSeen: number;
  readAt: number;
}

export interface ScanStats {
  candidates: number;
  read: number;
  failed: number;
  pending: number;
  ms: number;
}

export interface DiscoveryOptions {
  netnsDirs: string[];
  /** Default "/proc"; null scans no processes. */
  proc?: string | null;
  /** Default: the daemon's own namespace and PID 1's. */
  exclude?: Set<string>;
  /** Default: the device of /proc/self/ns/net. */
  nsfsDev?: number;
  fs?: FsOps;
  read?: (path: string) => NetnsRead;
  now?: () => number;
  /** How long a new namespace is re-read on every scan while a wanted IP is missing. */
  youngMs?: number;
  /** How often an older one is, meanwhile. */
  recheckMs?: number;
}

interface Cached extends NetnsInfo {
  witnesses: Set<Witness>;
}

/** The daemon's own namespace, by inode, and the nsfs device. */
export function selfNetns(fs: FsOps = realFs): { ino: string; dev: number } {
  const st = fs.stat("/proc/self/ns/net");
  const ino = parseNsLink(fs.readLink("/proc/self/ns/net"));
  if (!st || !ino) throw new Error("cannot read /proc/self/ns/net");
  return { ino, dev: st.dev };
}

export class NetnsDiscovery {
  readonly #cache = new Map<string, Cached>();
  readonly #src: ListSources;
  readonly #fs: FsOps;
  readonly #read: (path: string) => NetnsRead;
  readonly #now: () => number;
  readonly #nsfsDev: number;
  readonly #youngMs: number;
  readonly #recheckMs: number;
  #pendingSince = new Map<string, number>();
  lastStats: ScanStats = { candidates: 0, read: 0, failed: 0, pending: 0, ms: 0 };

  constructor(opts: DiscoveryOptions) {
    this.#fs = opts.fs ?? realFs;
    this.#read = opts.read ?? readNetns;
    this.#now = opts.now ?? (() => performance.now());
    this.#youngMs = opts.youngMs ?? 10_000;
    this.#recheckMs = opts.recheckMs ?? 10_000;
    let exclude = opts.exclude;
    let dev = opts.nsfsDev;
    if (!exclude || dev === undefined) {
      const self = selfNetns(this.#fs);
      dev ??= self.dev;
      if (!exclude) {
        exclude = new Set([self.ino]);
        // Also the node's own namespace when the daemon runs in another one (a debug shell).
        const init = parseNsLink(this.#fs.readLink("/proc/1/ns/net"));
        if (init) exclude.add(init);
      }
    }
    this.#nsfsDev = dev;
    this.#src = {
      netnsDirs: opts.netnsDirs,
      proc: opts.proc === null ? undefined : opts.proc ?? "/proc",
      exclude,
    };
  }

  /**
   * Lists the namespaces and reads those that need it: new ones (or ones whose witnesses are all
   * gone), and, while some wanted address is in no known namespace, the ones holding none.
   */
  scan(wanted: ReadonlySet<string>): NetnsInfo[] {
    const t0 = performance.now();
    const now = this.#now();
    const { candidates, pending } = listNamespaces(this.#src, this.#nsfsDev, this.#fs);
    const stats: ScanStats = {
      candidates: candidates.size,
      read: 0,
      failed: 0,
      pending: pending.length,
      ms: 0,
    };
    for (const ino of this.#cache.keys()) if (!candidates.has(ino)) this.#cache.delete(ino);
    const stale: NetnsCandidate[] = [];
    for (const c of candidates.values()) {
      const hit = this.#cache.get(c.ino);
      if (hit && c.witnesses.some((w) => hit.witnesses.has(w))) hit.witnesses = new Set(c.witnesses);
      else {
        this.#cache.delete(c.ino);
        stale.push(c);
      }
    }
    // New namespaces first: what they hold may leave nothing missing, and nothing else to enter.
    for (const c of stale) this.#readInto(c, now, stats);
    if (this.#missing(wanted)) {
      const fresh = new Set(stale.map((c) => c.ino));
      for (const e of [...this.#cache.values()]) {
        if (fresh.has(e.ino) || e.ips.some((ip) => wanted.has(ip))) continue;
        // A runtime sets a namespace up within moments of creating it; an older one that held none
        // of the wanted IPs is unlikely to now (a completed pod keeps its IP in the API), so it is
        // entered again only now and then.
        if (now - e.firstSeen > this.#youngMs && now - e.readAt < this.#recheckMs) continue;
        this.#readInto(candidates.get(e.ino)!, e.firstSeen, stats);
      }
    }
    const nextPending = new Map<string, number>();
    for (const p of pending) nextPending.set(p, this.#pendingSince.get(p) ?? now);
    this.#pendingSince = nextPending;
    stats.ms = performance.now() - t0;
    this.lastStats = stats;
    return this.namespaces();
  }

  #missing(wanted: ReadonlySet<string>): boolean {
    if (wanted.size === 0) return false;
    const found = new Set<string>();
    for (const e of this.#cache.values()) for (const ip of e.ips) if (wanted.has(ip)) found.add(ip);
    return found.size < wanted.size;
  }

  #readInto(c: NetnsCandidate, firstSeen: number, stats: ScanStats): void {
    let r: NetnsRead | undefined, path = "";
    for (const p of c.paths) {
      try {
        r = this.#read(p);
        path = p;
        break;
      } catch (e) {
        // The process exited or the file went between listing and reading; another path may do.
        if (!(e instanceof LibcError) && !(e instanceof NetnsError)) throw e;
      }
    }
    stats.read++;
    if (!r) {
      stats.failed++;
      this.#cache.delete(c.ino);
      return;
    }
    this.#cache.set(c.ino, {
      ino: c.ino,
      path,
      cookie: r.cookie,
      ips: podAddresses(r.addresses),
      firstSeen,
      readAt: this.#now(),
      witnesses: new Set(c.witnesses),
    });
  }

  namespaces(): NetnsInfo[] {
    return [...this.#cache.values()].map(({ witnesses: _, ...info }) => info);
  }

  /**
   * Whether a scan soon could find what this one could not: a netns file not mounted yet, or a
   * namespace that appeared lately and has no wanted address yet (the runtime adds it after). The
   * age in ms of the youngest such thing, or undefined.
   */
  settling(wanted: ReadonlySet<string>, windowMs = 3000): number | undefined {
    const now = this.#now();
    let youngest: number | undefined;
    const see = (t: number) => {
      const age = now - t;
      if (age < windowMs && (youngest === undefined || age < youngest)) youngest = age;
    };
    for (const t of this.#pendingSince.values()) see(t);
    if (this.#missing(wanted)) {
      for (const e of this.#cache.values()) if (!e.ips.some((ip) => wanted.has(ip))) see(e.firstSeen);
    }
    return youngest;
  }
}
