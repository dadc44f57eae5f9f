// Directories of pins on the BPF filesystem. Pins are what keep maps and links alive across agent
// restarts, so the helpers refuse to work anywhere but on bpffs: a typo in a path must never turn
// "remove our pins" into "remove files on the host".
import { checkLibbpf } from "../ffi/errors.ts";
import { statfsType } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { cString } from "../ffi/native.ts";

/** statfs f_type of a bpf filesystem (BPF_FS_MAGIC). */
export const BPF_FS_MAGIC = 0xcafe4a11n;

export class BpffsError extends Error {
  override name = "BpffsError";
  constructor(readonly path: string, message: string) {
    super(message);
  }
}

/** True when `path` (which must exist) lives on a bpf filesystem. */
export function isOnBpffs(path: string): boolean {
  return statfsType(path) === BPF_FS_MAGIC;
}

/** The directory part of an absolute path ("/" for top-level entries). */
export function parentDir(path: string): string {
  return path.replace(/\/+$/, "").replace(/\/+[^/]*$/, "") || "/";
}

function nearestExisting(path: string): string {
  let p = path;
  for (;;) {
    try {
      Deno.statSync(p);
      return p;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    const parent = parentDir(p);
    if (parent === p) return p;
    p = parent;
  }
}

function requireAbsolute(path: string): void {
  if (!path.startsWith("/")) throw new BpffsError(path, `pin path must be absolute: ${JSON.stringify(path)}`);
}

/**
 * mkdir -p for a pin directory, after checking that it is (or will be) on bpffs. Mount bpffs first
 * (`mount -t bpf bpf /sys/fs/bpf`) when the check fails.
 */
export function ensureBpffsDir(dir: string): void {
  requireAbsolute(dir);
  const existing = nearestExisting(dir);
  const magic = statfsType(existing);
  if (magic !== BPF_FS_MAGIC) {
    throw new BpffsError(
      dir,
      `${dir} is not on a bpf filesystem (${existing} has filesystem magic 0x${magic.toString(16)}); ` +
        `mount one there (mount -t bpf bpf /sys/fs/bpf) or choose a directory under a bpffs mount`,
    );
  }
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** Pins the map, program or link behind `fd` at `path`, creating missing directories. */
export function pinFd(fd: number, path: string): void {
  requireAbsolute(path);
  ensureBpffsDir(parentDir(path));
  checkLibbpf(`bpf_obj_pin(fd ${fd}, ${path})`, libbpf().bpf_obj_pin(fd, cString(path)));
}

/** Whether something is pinned at `path` (pins are files on bpffs). */
export function isPinned(path: string): boolean {
  try {
    return Deno.lstatSync(path).isFile;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Unpins everything under `dir` and removes the directories, `dir` included. Returns how many pins
 * were removed; a missing `dir` is not an error (nothing to clean up). Unpinning drops the pin's
 * reference: a map or link nothing else holds is freed by the kernel.
 */
export function removePinTree(dir: string): number {
  requireAbsolute(dir);
  let stat: Deno.FileInfo;
  try {
    stat = Deno.lstatSync(dir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
  if (!isOnBpffs(dir)) {
    throw new BpffsError(dir, `refusing to remove ${dir}: it is not on a bpf filesystem`);
  }
  if (!stat.isDirectory) {
    Deno.removeSync(dir);
    return 1;
  }
  return removeTree(dir);
}

function removeTree(dir: string): number {
  let removed = 0;
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) {
      removed += removeTree(path);
    } else {
      Deno.removeSync(path);
      removed++;
    }
  }
  Deno.removeSync(dir);
  return removed;
}
