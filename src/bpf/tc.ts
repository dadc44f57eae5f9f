// TC programs as direct-action cls_bpf filters on a clsact qdisc, over netlink (libbpf 1.1.2 has no
// tcx links). A filter is identified by interface, direction, handle and priority; it stays until
// deleted or until the interface disappears, independent of our fds. All calls act on the calling
// thread's network namespace.
import { checkLibbpf } from "../ffi/errors.ts";
import { Errno } from "../ffi/errno.ts";
import { LIBBPF_STRUCTS } from "../ffi/libbpf_symbols.ts";
import { libbpf } from "../ffi/library.ts";
import { quietLibbpf } from "../ffi/libbpf_log.ts";
import type { ProgramFd } from "./prog_attach.ts";

export type TcDirection = "ingress" | "egress";

/** enum bpf_tc_attach_point */
const TC_INGRESS = 1 << 0;
const TC_EGRESS = 1 << 1;
/** enum bpf_tc_flags */
const TC_F_REPLACE = 1 << 0;

export interface TcFilterId {
  ifindex: number;
  direction: TcDirection;
  handle: number;
  priority: number;
}

export interface TcAttachOptions {
  ifindex: number;
  direction: TcDirection;
  prog: ProgramFd;
  /** Filter handle; 0 or absent lets the kernel choose (the chosen one is returned). */
  handle?: number;
  /** Filter priority (1..65535); 0 or absent lets the kernel choose. */
  priority?: number;
  /** Replace a filter that already has this handle and priority instead of failing with EEXIST. */
  replace?: boolean;
}

export interface TcFilter extends TcFilterId {
  progId: number;
}

function hook(ifindex: number, attachPoint: number): Uint8Array<ArrayBuffer> {
  const L = LIBBPF_STRUCTS.tcHook;
  const buf = new Uint8Array(L.size);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(L.size), true);
  v.setInt32(L.ifindex, ifindex, true);
  v.setUint32(L.attachPoint, attachPoint, true);
  return buf;
}

function tcOpts(fields: { progFd?: number; flags?: number; handle?: number; priority?: number }) {
  const L = LIBBPF_STRUCTS.tcOpts;
  const buf = new Uint8Array(L.size);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(L.size), true);
  v.setInt32(L.progFd, fields.progFd ?? 0, true);
  v.setUint32(L.flags, fields.flags ?? 0, true);
  v.setUint32(L.handle, fields.handle ?? 0, true);
  v.setUint32(L.priority, fields.priority ?? 0, true);
  return { buf, view: v };
}

function attachPoint(direction: TcDirection): number {
  return direction === "ingress" ? TC_INGRESS : TC_EGRESS;
}

// libbpf needs both to name a filter; checking here keeps EINVAL meaning "no qdisc" below.
function requireFilterId(id: TcFilterId): void {
  if (!(id.handle > 0) || !(id.priority > 0 && id.priority <= 0xffff)) {
    throw new RangeError(
      `a tc filter needs a handle > 0 and a priority 1..65535, got ${id.handle}/${id.priority}`,
    );
  }
}

function where(id: { ifindex: number; direction: TcDirection }): string {
  return `ifindex ${id.ifindex} ${id.direction}`;
}

/** Creates the clsact qdisc on `ifindex` unless it is already there. */
export function tcEnsureHook(ifindex: number): void {
  const ret = quietLibbpf(() => libbpf().bpf_tc_hook_create(hook(ifindex, TC_INGRESS | TC_EGRESS)));
  if (ret === -Errno.EEXIST) return;
  checkLibbpf(`bpf_tc_hook_create(ifindex ${ifindex})`, ret);
}

/**
 * Removes the clsact qdisc of `ifindex` with every filter on it, ours or not: only for interfaces
 * the agent owns. tcDetach removes a single filter.
 */
export function tcDestroyHook(ifindex: number): void {
  checkLibbpf(
    `bpf_tc_hook_destroy(ifindex ${ifindex})`,
    libbpf().bpf_tc_hook_destroy(hook(ifindex, TC_INGRESS | TC_EGRESS)),
  );
}

/** Attaches `prog` as a direct-action filter, creating the clsact qdisc when needed. */
export function tcAttach(opts: TcAttachOptions): TcFilter {
  if (opts.priority !== undefined && (opts.priority < 0 || opts.priority > 0xffff)) {
    throw new RangeError(`tc priority must be 0..65535, got ${opts.priority}`);
  }
  tcEnsureHook(opts.ifindex);
  const { buf, view } = tcOpts({
    progFd: opts.prog.fd,
    flags: opts.replace ? TC_F_REPLACE : 0,
    handle: opts.handle,
    priority: opts.priority,
  });
  const L = LIBBPF_STRUCTS.tcOpts;
  checkLibbpf(
    `bpf_tc_attach(${opts.prog.name ?? `prog fd ${opts.prog.fd}`}, ${where(opts)})`,
    libbpf().bpf_tc_attach(hook(opts.ifindex, attachPoint(opts.direction)), buf),
  );
  return {
    ifindex: opts.ifindex,
    direction: opts.direction,
    handle: view.getUint32(L.handle, true),
    priority: view.getUint32(L.priority, true),
    progId: view.getUint32(L.progId, true),
  };
}

/** Deletes one filter; false when there was no such filter. */
export function tcDetach(id: TcFilterId): boolean {
  requireFilterId(id);
  const { buf } = tcOpts({ handle: id.handle, priority: id.priority });
  const ret = quietLibbpf(() => libbpf().bpf_tc_detach(hook(id.ifindex, attachPoint(id.direction)), buf));
  if (ret === -Errno.ENOENT) return false;
  checkLibbpf(`bpf_tc_detach(${where(id)}, handle ${id.handle}, priority ${id.priority})`, ret);
  return true;
}

/** The id of the program in that filter slot, or undefined when the slot (or the qdisc) is empty. */
export function tcQuery(id: TcFilterId): number | undefined {
  requireFilterId(id);
  const { buf, view } = tcOpts({ handle: id.handle, priority: id.priority });
  const ret = libbpf().bpf_tc_query(hook(id.ifindex, attachPoint(id.direction)), buf);
  // ENOENT: no such filter; EINVAL: no clsact qdisc on the interface at all.
  if (ret === -Errno.ENOENT || ret === -Errno.EINVAL) return undefined;
  checkLibbpf(`bpf_tc_query(${where(id)}, handle ${id.handle}, priority ${id.priority})`, ret);
  return view.getUint32(LIBBPF_STRUCTS.tcOpts.progId, true);
}
