// XDP attachment over netlink (no link object): the program stays on the interface until detached or
// until the interface goes, whatever happens to our fds. attachXdp in link.ts is the link-based
// alternative. All calls act on the calling thread's network namespace.
import { checkLibbpf } from "../ffi/errors.ts";
import { LIBBPF_STRUCTS } from "../ffi/libbpf_symbols.ts";
import { libbpf } from "../ffi/library.ts";
import type { ProgramFd } from "./prog_attach.ts";

/** XDP_FLAGS_* of linux/if_link.h */
export const XDP_FLAGS = {
  UPDATE_IF_NOEXIST: 1 << 0,
  SKB_MODE: 1 << 1,
  DRV_MODE: 1 << 2,
  HW_MODE: 1 << 3,
  REPLACE: 1 << 4,
} as const;

/** "skb": generic (any device, slower); "drv": native in the driver; "hw": offloaded to the NIC. */
export type XdpMode = "skb" | "drv" | "hw";

/** XDP_ATTACHED_* as bpf_xdp_query reports them. */
export type XdpAttachMode = "none" | "drv" | "skb" | "hw" | "multi";
const ATTACH_MODES: readonly XdpAttachMode[] = ["none", "drv", "skb", "hw", "multi"];

function modeFlag(mode: XdpMode | undefined): number {
  if (mode === "skb") return XDP_FLAGS.SKB_MODE;
  if (mode === "drv") return XDP_FLAGS.DRV_MODE;
  if (mode === "hw") return XDP_FLAGS.HW_MODE;
  return 0;
}

function attachOpts(oldProgFd: number | undefined): Uint8Array<ArrayBuffer> | null {
  if (oldProgFd === undefined) return null;
  const L = LIBBPF_STRUCTS.xdpAttachOpts;
  const buf = new Uint8Array(L.size);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(L.size), true);
  v.setInt32(L.oldProgFd, oldProgFd, true);
  return buf;
}

export interface XdpAttachOptions {
  /** Without a mode the kernel uses native mode when the driver supports it, else generic. */
  mode?: XdpMode;
  /** Fail with EBUSY when any program is already attached in that mode. */
  ifNoneAttached?: boolean;
  /** Replace exactly this program, atomically; fails with EEXIST when another one is attached. */
  replace?: ProgramFd;
}

function progLabel(prog: ProgramFd): string {
  return prog.name ?? `prog fd ${prog.fd}`;
}

/** Attaches (or replaces) the XDP program of `ifindex` over netlink. */
export function xdpAttach(ifindex: number, prog: ProgramFd, opts: XdpAttachOptions = {}): void {
  if (opts.ifNoneAttached && opts.replace) {
    throw new TypeError("xdpAttach: ifNoneAttached and replace exclude each other");
  }
  let flags = modeFlag(opts.mode);
  if (opts.ifNoneAttached) flags |= XDP_FLAGS.UPDATE_IF_NOEXIST;
  if (opts.replace) flags |= XDP_FLAGS.REPLACE;
  checkLibbpf(
    `bpf_xdp_attach(${progLabel(prog)}, ifindex ${ifindex})`,
    libbpf().bpf_xdp_attach(ifindex, prog.fd, flags, attachOpts(opts.replace?.fd)),
  );
}

export interface XdpDetachOptions {
  mode?: XdpMode;
  /** Detach only if this program is the attached one (EEXIST otherwise). */
  expected?: ProgramFd;
}

/** Detaches the XDP program of `ifindex` (attached over netlink; links are detached via BpfLink). */
export function xdpDetach(ifindex: number, opts: XdpDetachOptions = {}): void {
  let flags = modeFlag(opts.mode);
  if (opts.expected) flags |= XDP_FLAGS.REPLACE;
  checkLibbpf(
    `bpf_xdp_detach(ifindex ${ifindex})`,
    libbpf().bpf_xdp_detach(ifindex, flags, attachOpts(opts.expected?.fd)),
  );
}

/** The id of the XDP program attached to `ifindex` (in `mode`, if given), or undefined. */
export function xdpQueryId(ifindex: number, mode?: XdpMode): number | undefined {
  const id = new Uint32Array(1);
  checkLibbpf(
    `bpf_xdp_query_id(ifindex ${ifindex})`,
    libbpf().bpf_xdp_query_id(ifindex, modeFlag(mode), new Uint8Array(id.buffer)),
  );
  return id[0] ? id[0] : undefined;
}

export interface XdpState {
  attachMode: XdpAttachMode;
  /** The program when exactly one is attached; 0 otherwise. */
  progId: number;
  drvProgId: number;
  skbProgId: number;
  hwProgId: number;
}

/** Everything attached to `ifindex` in each mode, for status output. */
export function xdpQuery(ifindex: number): XdpState {
  const L = LIBBPF_STRUCTS.xdpQueryOpts;
  const buf = new Uint8Array(L.size);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(L.size), true);
  checkLibbpf(`bpf_xdp_query(ifindex ${ifindex})`, libbpf().bpf_xdp_query(ifindex, 0, buf));
  return {
    attachMode: ATTACH_MODES[v.getUint8(L.attachMode)] ?? "multi",
    progId: v.getUint32(L.progId, true),
    drvProgId: v.getUint32(L.drvProgId, true),
    skbProgId: v.getUint32(L.skbProgId, true),
    hwProgId: v.getUint32(L.hwProgId, true),
  };
}
