// BPF links: the kernel object that keeps one program attached to one hook. We attach through links
// wherever the kernel offers them, because a link never replaces what others attached (cgroup hooks
// become multi-attach) and its lifetime is explicit: the attachment lasts while an fd or a bpffs pin
// holds the link, so a pinned link survives the agent and unpinning it detaches.
//
// Links are made from program fds (bpf_link_create) rather than libbpf's program handles, so a
// program loaded now and one reopened from its pin attach, and swap into a link, the same way.
import { checkLibbpf } from "../ffi/errors.ts";
import { closeFd, O_DIRECTORY, O_RDONLY, openFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { type LinkInfo, linkInfoByFd } from "./info.ts";
import type { ProgramFd } from "./prog_attach.ts";
import { openPin, OwnedFd } from "./owned_fd.ts";
import { pinFd } from "./pins.ts";
import { attachTypeName } from "./types.ts";

/** A program that knows its hook: what a cgroup attach needs (a BpfProgram, a PinnedProgram). */
export interface AttachableProgram extends ProgramFd {
  readonly name: string;
  /** enum bpf_attach_type, see AttachType. */
  readonly attachType: number;
}

export class BpfLink implements Disposable {
  /** What this link attaches, for messages: e.g. "rewrite_port on cgroup /sys/fs/cgroup/x". */
  readonly description: string;
  readonly #fd: OwnedFd;
  #pinPath: string | undefined;

  private constructor(fd: number, description: string, pinPath?: string) {
    // Dropped unclosed, the handle's fd is closed by the collector: a pinned link stays attached.
    this.#fd = new OwnedFd(fd, `${description}: link handle`);
    this.description = description;
    this.#pinPath = pinPath;
  }

  /** @internal takes ownership of a link fd the kernel just returned */
  static fromFd(fd: number, description: string): BpfLink {
    return new BpfLink(fd, description);
  }

  /** Opens the link pinned at `path` (e.g. left by a previous run of the agent). */
  static openPinned(path: string): BpfLink {
    return new BpfLink(openPin(path, "link"), `link pinned at ${path}`, path);
  }

  get fd(): number {
    return this.#fd.fd;
  }

  get closed(): boolean {
    return this.#fd.closed;
  }

  /** Where this handle pinned (or opened) the link; undefined when not pinned through it. */
  get pinPath(): string | undefined {
    return this.#pinPath;
  }

  /** The kernel's view: link id, link type and attached program id. */
  info(): LinkInfo {
    return linkInfoByFd(this.fd);
  }

  /**
   * Pins the link on bpffs (creating missing directories): it then stays attached after every fd
   * to it is closed.
   */
  pin(path: string): void {
    pinFd(this.fd, path);
    this.#pinPath = path;
  }

  /** Removes the pin made by pin() or opened by openPinned(); with no fd left, that detaches. */
  unpin(): void {
    if (this.#pinPath === undefined) throw new Error(`${this.description}: not pinned through this handle`);
    Deno.removeSync(this.#pinPath);
    this.#pinPath = undefined;
  }

  /**
   * Detaches the program now, whoever else holds the link (pins included). The link object lingers
   * (defunct) until its last reference goes.
   */
  detach(): void {
    checkLibbpf(`bpf_link_detach(${this.description})`, libbpf().bpf_link_detach(this.fd));
  }

  /** Atomically swaps the attached program for `program` (same program type), without a gap. */
  update(program: ProgramFd): void {
    checkLibbpf(
      `bpf_link_update(${this.description}, ${program.name ?? `prog fd ${program.fd}`})`,
      libbpf().bpf_link_update(this.fd, program.fd, null),
    );
  }

  /** Closes our fd. An unpinned link then detaches; a pinned one stays attached. */
  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Attaches a cgroup program (connect4, sockops, getsockopt, ...) to the cgroup v2 directory
 * `cgroupPath` through a link, at the program's own attach type. Programs others attached to the
 * same cgroup keep running.
 */
export function attachCgroup(prog: AttachableProgram, cgroupPath: string): BpfLink {
  const cgroupFd = openFd(cgroupPath, O_RDONLY | O_DIRECTORY);
  try {
    const fd = checkLibbpf(
      `bpf_link_create(${prog.name}, cgroup ${cgroupPath}, ${attachTypeName(prog.attachType)})`,
      libbpf().bpf_link_create(prog.fd, cgroupFd, prog.attachType, null),
    );
    return BpfLink.fromFd(fd, `${prog.name} on cgroup ${cgroupPath}`);
  } finally {
    closeFd(cgroupFd);
  }
}

/** How an XDP program runs: in the driver (native), or on the skb after it (generic, "SKB mode"). */
export type XdpLinkMode = "native" | "generic";

const BPF_XDP = 37; // enum bpf_attach_type
const XDP_FLAGS_SKB_MODE = 1 << 1;

/**
 * Attaches an XDP program to interface `ifindex` of the calling thread's network namespace through a
 * link pinned at `pinPath`, so that it stays attached after this process. While the link exists,
 * netlink attach/detach on that interface fail with EBUSY. Native mode is the driver's own hook (on a
 * veth it also makes the kernel stop offering GSO to the peer); generic mode runs on the skb.
 */
export function attachXdp(
  prog: ProgramFd,
  ifindex: number,
  pinPath: string,
  mode: XdpLinkMode = "native",
): BpfLink {
  const opts = new Uint8Array(16); // struct bpf_link_create_opts { size_t sz; __u32 flags; ... }
  const dv = new DataView(opts.buffer);
  dv.setBigUint64(0, BigInt(opts.length), true);
  dv.setUint32(8, mode === "generic" ? XDP_FLAGS_SKB_MODE : 0, true);
  const name = prog.name ?? `prog fd ${prog.fd}`;
  const fd = checkLibbpf(
    `bpf_link_create(${name}, ifindex ${ifindex}, BPF_XDP, ${mode} mode)`,
    libbpf().bpf_link_create(prog.fd, ifindex, BPF_XDP, opts),
  );
  const link = BpfLink.fromFd(fd, `${name} on XDP of ifindex ${ifindex}`);
  try {
    link.pin(pinPath);
  } catch (e) {
    link.close();
    throw e;
  }
  return link;
}
