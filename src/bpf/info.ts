// What the kernel knows about a loaded program, map or link (BPF_OBJ_GET_INFO_BY_FD), decoded from
// the struct layouts of linux/bpf.h. Status output and pin reuse checks read these.
import { checkLibbpf } from "../ffi/errors.ts";
import { closeFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { decodeCChars } from "../ffi/native.ts";
import { mapTypeName, progTypeName } from "./types.ts";

// struct bpf_prog_info: 232 bytes in the 6.1 uapi; the kernel fills what both sides know.
const PROG_INFO = {
  size: 232,
  type: 0,
  id: 4,
  tag: 8,
  tagLen: 8,
  loadTime: 40,
  uid: 48,
  nrMapIds: 52,
  mapIds: 56,
  name: 64,
} as const;
// struct bpf_map_info: 88 bytes.
const MAP_INFO = {
  size: 88,
  type: 0,
  id: 4,
  keySize: 8,
  valueSize: 12,
  maxEntries: 16,
  flags: 20,
  name: 24,
  mapExtra: 80,
} as const;
// struct bpf_link_info: only the common head is decoded.
const LINK_INFO = { size: 48, type: 0, id: 4, progId: 8 } as const;
const NAME_LEN = 16;

function objInfo(fd: number, size: number, what: string, buf = new Uint8Array(size)): DataView {
  const len = new Uint32Array([size]);
  checkLibbpf(
    `bpf_obj_get_info_by_fd(${what} fd ${fd})`,
    libbpf().bpf_obj_get_info_by_fd(fd, buf, new Uint8Array(len.buffer)),
  );
  return new DataView(buf.buffer);
}

function name(view: DataView, offset: number): string {
  return decodeCChars(new Uint8Array(view.buffer, offset, NAME_LEN));
}

export interface ProgInfo {
  id: number;
  /** The kernel's copy of the name: at most 15 characters. */
  name: string;
  type: number;
  typeName: string;
  /** The program's tag (a hash of its instructions) as 16 hex digits, like bpftool shows it. */
  tag: string;
  /** Nanoseconds since boot at load time. */
  loadTimeNs: bigint;
  createdByUid: number;
}

export function progInfoByFd(fd: number): ProgInfo {
  const v = objInfo(fd, PROG_INFO.size, "prog");
  const type = v.getUint32(PROG_INFO.type, true);
  const tagBytes = new Uint8Array(v.buffer, PROG_INFO.tag, PROG_INFO.tagLen);
  return {
    id: v.getUint32(PROG_INFO.id, true),
    name: name(v, PROG_INFO.name),
    type,
    typeName: progTypeName(type),
    tag: Array.from(tagBytes, (b) => b.toString(16).padStart(2, "0")).join(""),
    loadTimeNs: v.getBigUint64(PROG_INFO.loadTime, true),
    createdByUid: v.getUint32(PROG_INFO.uid, true),
  };
}

/**
 * Ids of the maps the program uses, in the order of its instructions: a program reopened from a pin
 * is only the one to run if these are the maps pinned now.
 */
export function progMapIds(fd: number): number[] {
  const count = objInfo(fd, PROG_INFO.size, "prog").getUint32(PROG_INFO.nrMapIds, true);
  if (count === 0) return [];
  const ids = new Uint32Array(count);
  const buf = new Uint8Array(PROG_INFO.size);
  const v = new DataView(buf.buffer);
  v.setUint32(PROG_INFO.nrMapIds, count, true);
  v.setBigUint64(PROG_INFO.mapIds, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(ids))), true);
  objInfo(fd, PROG_INFO.size, "prog", buf);
  // The kernel says how many there are now; a program's maps never change after load.
  return [...ids.subarray(0, Math.min(count, v.getUint32(PROG_INFO.nrMapIds, true)))];
}

/** Opens a program by its kernel id. The caller owns (and must close) the returned fd. */
export function progFdById(id: number): number {
  return checkLibbpf(`bpf_prog_get_fd_by_id(${id})`, libbpf().bpf_prog_get_fd_by_id(id));
}

/** Info for a program given by an fd we hold (e.g. a BpfProgram) or by its kernel id. */
export function progInfo(ref: { fd: number } | { id: number }): ProgInfo {
  if ("fd" in ref) return progInfoByFd(ref.fd);
  const fd = progFdById(ref.id);
  try {
    return progInfoByFd(fd);
  } finally {
    closeFd(fd);
  }
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  typeName: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  mapExtra: bigint;
}

export function mapInfoByFd(fd: number): MapInfo {
  const v = objInfo(fd, MAP_INFO.size, "map");
  const type = v.getUint32(MAP_INFO.type, true);
  return {
    id: v.getUint32(MAP_INFO.id, true),
    name: name(v, MAP_INFO.name),
    type,
    typeName: mapTypeName(type),
    keySize: v.getUint32(MAP_INFO.keySize, true),
    valueSize: v.getUint32(MAP_INFO.valueSize, true),
    maxEntries: v.getUint32(MAP_INFO.maxEntries, true),
    flags: v.getUint32(MAP_INFO.flags, true),
    mapExtra: v.getBigUint64(MAP_INFO.mapExtra, true),
  };
}

/** Info for a map given by its kernel id. */
export function mapInfoById(id: number): MapInfo {
  const fd = checkLibbpf(`bpf_map_get_fd_by_id(${id})`, libbpf().bpf_map_get_fd_by_id(id));
  try {
    return mapInfoByFd(fd);
  } finally {
    closeFd(fd);
  }
}

export interface LinkInfo {
  id: number;
  /** enum bpf_link_type (1 raw_tracepoint, 2 tracing, 3 cgroup, 4 iter, 5 netns, 6 xdp, ...). */
  type: number;
  progId: number;
}

export function linkInfoByFd(fd: number): LinkInfo {
  const v = objInfo(fd, LINK_INFO.size, "link");
  return {
    id: v.getUint32(LINK_INFO.id, true),
    type: v.getUint32(LINK_INFO.type, true),
    progId: v.getUint32(LINK_INFO.progId, true),
  };
}
