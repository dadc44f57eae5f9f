// The node's record of per-pod attachments, shared by the daemon, `uninstall` and `status`/`pods`:
// one format, validated on every read, written so that a daemon killed at any instant leaves either
// the old or the new file (temp file, rename). The previous good file is kept beside it, so one
// damaged file never makes the daemon forget the pods it attached.
//
// Nothing is fsynced, on purpose: every write is on a pod's ADD or DEL path, and what the records
// describe (pod namespaces, mark listeners, XDP/TC links, the pins on bpffs) lives in memory only
// and is gone after a power loss or a kernel crash, so a write lost with it loses nothing. A file
// torn or stale after such a restart is read as damaged or as naming namespaces that are gone, and
// both are handled at start. A killed daemon needs only the rename: the page cache is shared.
import { dirname } from "node:path";
import type { IngressHook } from "../xdp/attacher.ts";
import { crashPoint } from "../util/crash_point.ts";
import { isRecord } from "../util/record.ts";
import { writeAllSync } from "../util/bytes.ts";

export interface AttachmentRecord {
  containerId: string;
  ifName: string;
  netns: string;
  podNamespace: string;
  podName: string;
  podUid?: string;
  podIp: string;
  mark: number;
  /** Namespace cookie (decimal string), the restart-proof second key of the pod's identity. */
  netnsCookie?: string;
  hook: IngressHook;
  txChanged: boolean;
  createdAt: string;
  /** The pod's directory under <pins>/pods; records older than this field use the container ID. */
  pinKey?: string;
}

export function attachmentsFile(stateDir: string): string {
  return `${stateDir}/attachments.json`;
}

export function previousFile(file: string): string {
  return `${file}.prev`;
}

export type StateRead =
  | { kind: "ok"; records: AttachmentRecord[]; from: "current" | "previous"; problem?: string }
  | { kind: "absent" }
  /** Neither the file nor its previous copy is usable: what is attached must be rebuilt, not dropped. */
  | { kind: "invalid"; problem: string };

/** Checks a decoded state file; throws naming the first thing that is wrong. */
export function validateRecords(v: unknown): AttachmentRecord[] {
  if (!Array.isArray(v)) throw new Error("not a list of records");
  const ids = new Set<string>();
  return v.map((r, i) => {
    const bad = (what: string) => new Error(`record ${i}: ${what}`);
    if (!isRecord(r)) throw bad("not an object");
    for (const k of ["containerId", "ifName", "netns", "podNamespace", "podName", "podIp", "createdAt"]) {
      if (typeof r[k] !== "string") throw bad(`"${k}" must be a string`);
    }
    if (r.containerId === "" || r.netns === "" || r.ifName === "") {
      throw bad("empty containerId, netns or ifName");
    }
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(r.podIp as string)) {
      throw bad(`"podIp" ${JSON.stringify(r.podIp)} is not IPv4`);
    }
    if (typeof r.mark !== "number" || !Number.isInteger(r.mark) || r.mark <= 0 || r.mark > 0xffffffff) {
      throw bad(`"mark" must be a positive 32-bit integer`);
    }
    if (r.hook !== "xdp" && r.hook !== "tc") throw bad(`"hook" must be "xdp" or "tc"`);
    if (typeof r.txChanged !== "boolean") throw bad(`"txChanged" must be a boolean`);
    for (const k of ["podUid", "netnsCookie", "pinKey"]) {
      if (r[k] !== undefined && typeof r[k] !== "string") throw bad(`"${k}" must be a string`);
    }
    if (r.netnsCookie !== undefined && !/^\d+$/.test(r.netnsCookie as string)) {
      throw bad(`"netnsCookie" is not a number`);
    }
    if (ids.has(r.containerId as string)) throw bad(`container ${r.containerId} listed twice`);
    ids.add(r.containerId as string);
    return r as unknown as AttachmentRecord;
  });
}

function readOne(path: string): AttachmentRecord[] | "absent" | { problem: string } {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "absent";
    return { problem: `${path}: ${(e as Error).message}` };
  }
  try {
    return validateRecords(JSON.parse(text));
  } catch (e) {
    return { problem: `${path}: ${(e as Error).message}` };
  }
}

/** Reads the records: the file, else its previous copy; never throws for a damaged file. */
export function readAttachmentState(file: string): StateRead {
  const cur = readOne(file);
  if (Array.isArray(cur)) return { kind: "ok", records: cur, from: "current" };
  const prev = readOne(previousFile(file));
  if (Array.isArray(prev)) {
    return {
      kind: "ok",
      records: prev,
      from: "previous",
      problem: cur === "absent" ? `${file} is missing` : cur.problem,
    };
  }
  if (cur === "absent" && prev === "absent") return { kind: "absent" };
  const problems = [cur, prev].filter((x) => x !== "absent").map((x) => (x as { problem: string }).problem);
  return { kind: "invalid", problem: problems.join("; ") };
}

/** The records for read-only views: what the file says, or nothing. */
export function readRecordsForDisplay(file: string): AttachmentRecord[] {
  const r = readAttachmentState(file);
  return r.kind === "ok" ? r.records : [];
}

/**
 * Replaces the file with `records` in one rename (readers and a restarted daemon see the old or the
 * new file, never a part). The replaced file, when it was good, becomes the previous copy.
 */
export function writeAttachmentState(file: string, records: AttachmentRecord[]): void {
  const dir = dirname(file);
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const bytes = new TextEncoder().encode(JSON.stringify(records, null, 2) + "\n");
  const tmp = `${file}.tmp`;
  const f = Deno.openSync(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    writeAllSync(f, bytes);
  } finally {
    f.close();
  }
  crashPoint("state:temp-written");
  if (Array.isArray(readOne(file))) {
    // A hard link keeps the good file's bytes under the previous name without copying them.
    const prevTmp = `${previousFile(file)}.tmp`;
    try {
      Deno.removeSync(prevTmp);
    } catch { /* absent */ }
    Deno.linkSync(file, prevTmp);
    Deno.renameSync(prevTmp, previousFile(file));
  }
  Deno.renameSync(tmp, file);
}

/** Removes the file and its previous copy (uninstall). */
export function removeAttachmentState(file: string): void {
  for (const p of [file, previousFile(file), `${file}.tmp`, `${previousFile(file)}.tmp`]) {
    try {
      Deno.removeSync(p);
    } catch { /* absent */ }
  }
}
