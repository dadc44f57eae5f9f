// File operations the installer needs on directories other components also write to: atomic
// replacement that keeps mode, owner and symlinks, and content comparison.
import { basename, dirname, join } from "node:path";

const TEMP_MARK = ".merbridge-";
const TEMP_SUFFIX = ".tmp";

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

export async function readIfExists(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

export function tempPath(path: string): string {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(16);
  // The suffix keeps runtimes (which read *.conf, *.conflist, *.json) away from half-written files.
  return join(dirname(path), `.${basename(path)}${TEMP_MARK}${rand}${TEMP_SUFFIX}`);
}

export function isTempPath(path: string): boolean {
  const b = basename(path);
  return b.startsWith(".") && b.includes(TEMP_MARK) && b.endsWith(TEMP_SUFFIX);
}

/** Writes through a temp file and a rename, so readers see the old or the new file, never a part. */
export async function writeAtomic(
  path: string,
  bytes: Uint8Array,
  mode: number,
  owner?: { uid: number | null; gid: number | null },
): Promise<void> {
  const target = await realTarget(path);
  const tmp = tempPath(target);
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode });
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.chmod(tmp, mode);
    if (owner && owner.uid !== null && owner.gid !== null) {
      try {
        await Deno.chown(tmp, owner.uid, owner.gid);
      } catch (err) {
        if (!(err instanceof Deno.errors.PermissionDenied)) throw err;
      }
    }
    await Deno.rename(tmp, target);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dirname(target));
}

/** Makes a rename or removal in `dir` survive a power loss, not only a process crash. */
export async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/** A configuration reached through a symlink is edited where it lives, keeping the link. */
export async function realTarget(path: string): Promise<string> {
  try {
    return (await Deno.lstat(path)).isSymlink ? await Deno.realPath(path) : path;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return path;
    throw err;
  }
}

export async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sameFileContent(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([Deno.stat(a), Deno.stat(b)]);
  if (sa.size !== sb.size) return false;
  using fa = await Deno.open(a);
  using fb = await Deno.open(b);
  const ba = new Uint8Array(1 << 20);
  const bb = new Uint8Array(1 << 20);
  for (;;) {
    const na = await readFull(fa, ba);
    const nb = await readFull(fb, bb);
    if (na !== nb) return false;
    if (na === 0) return true;
    for (let i = 0; i < na; i++) if (ba[i] !== bb[i]) return false;
  }
}

async function readFull(f: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let off = 0;
  while (off < buf.length) {
    const n = await f.read(buf.subarray(off));
    if (n === null) break;
    off += n;
  }
  return off;
}

export function sameBytes(a: Uint8Array | null, b: Uint8Array): boolean {
  return a !== null && a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function removeIfExists(path: string | null): Promise<void> {
  if (path === null) return;
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

export function fileMode(stat: Deno.FileInfo): number {
  return (stat.mode ?? 0o644) % 0o10000;
}
