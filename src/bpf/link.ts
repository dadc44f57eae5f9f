// BPF links: the kernel object that keeps one program attached to one hook. We attach through links
// wherever the kernel offers them, because a link never replaces what others attached (cgroup hooks
// become multi-attach) and its lifetime is explicit: the attachment lasts while an fd or a bpffs pin
// holds the link, so a pinned link survives the agent and unpinning it detaches.
import { checkLibbpf, checkLibbpfPtr } from "../ffi/errors.ts";
import { closeFd, O_DIRECTORY, O_RDONLY, openFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { cString } from "../ffi/native.ts";
import { type LinkInfo, linkInfoByFd } from "./info.ts";
import { type BpfProgram, nativeProgram } from "./object.ts";
import { ensureBpffsDir, parentDir, pinFd } from "./pins.ts";

const liveLinks = new FinalizationRegistry<Deno.PointerObject>((ptr) => {
  // Same as close(): releases our reference only; a pinned link stays attached.
  libbpf().bpf_link__destroy(ptr);
});

export class BpfLink implements Disposable {
  /** What this link attaches, for messages: e.g. "rewrite_port on cgroup /sys/fs/cgroup/x". */
  readonly description: string;
  #ptr: Deno.PointerObject | null;
  #pinPath: string | undefined;

  private constructor(ptr: Deno.PointerObject, description: string, pinPath?: string) {
    this.#ptr = ptr;
    this.description = description;
    this.#pinPath = pinPath;
    liveLinks.register(this, ptr, this);
  }

  /** @internal wraps a link libbpf just created */
  static fromNative(ptr: Deno.PointerObject, description: string): BpfLink {
    return new BpfLink(ptr, description);
  }

  /** Opens the link pinned at `path` (e.g. left by a previous run of the agent). */
  static openPinned(path: string): BpfLink {
    const ptr = checkLibbpfPtr(`bpf_link__open(${path})`, libbpf().bpf_link__open(cString(path)));
    return new BpfLink(ptr, `link pinned at ${path}`, path);
  }

  get fd(): number {
    return libbpf().bpf_link__fd(this.#handle());
  }

  get closed(): boolean {
    return this.#ptr === null;
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
    ensureBpffsDir(parentDir(path));
    checkLibbpf(
      `bpf_link__pin(${this.description}, ${path})`,
      libbpf().bpf_link__pin(this.#handle(), cString(path)),
    );
    this.#pinPath = path;
  }

  /** Removes the pin made by pin() or opened by openPinned(); with no fd left, that detaches. */
  unpin(): void {
    if (this.#pinPath === undefined) throw new Error(`${this.description}: not pinned through this handle`);
    checkLibbpf(`bpf_link__unpin(${this.description})`, libbpf().bpf_link__unpin(this.#handle()));
    this.#pinPath = undefined;
  }

  /**
   * Detaches the program now, whoever else holds the link (pins included). The link object lingers
   * (defunct) until its last reference goes.
   */
  detach(): void {
    checkLibbpf(`bpf_link__detach(${this.description})`, libbpf().bpf_link__detach(this.#handle()));
  }

  /** Atomically swaps the attached program for `program` (same program type), without a gap. */
  update(program: BpfProgram): void {
    checkLibbpf(
      `bpf_link__update_program(${this.description}, ${program.name})`,
      libbpf().bpf_link__update_program(this.#handle(), nativeProgram(program)),
    );
  }

  /** Closes our fd. An unpinned link then detaches; a pinned one stays attached. */
  close(): void {
    const ptr = this.#ptr;
    if (ptr === null) return;
    this.#ptr = null;
    liveLinks.unregister(this);
    libbpf().bpf_link__destroy(ptr);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error(`${this.description}: link handle is closed`);
    return this.#ptr;
  }
}

/**
 * Attaches a cgroup program (connect4, sockops, getsockopt, ...) to the cgroup v2 directory
 * `cgroupPath` through a link, using the attach type the program's section declares. Programs others
 * attached to the same cgroup keep running.
 */
export function attachCgroup(prog: BpfProgram, cgroupPath: string): BpfLink {
  const cgroupFd = openFd(cgroupPath, O_RDONLY | O_DIRECTORY);
  try {
    const ptr = checkLibbpfPtr(
      `bpf_program__attach_cgroup(${prog.name}, ${cgroupPath})`,
      libbpf().bpf_program__attach_cgroup(nativeProgram(prog), cgroupFd),
    );
    return BpfLink.fromNative(ptr, `${prog.name} on cgroup ${cgroupPath}`);
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
  prog: BpfProgram,
  ifindex: number,
  pinPath: string,
  mode: XdpLinkMode = "native",
): BpfLink {
  if (mode === "native") {
    const ptr = checkLibbpfPtr(
      `bpf_program__attach_xdp(${prog.name}, ifindex ${ifindex})`,
      libbpf().bpf_program__attach_xdp(nativeProgram(prog), ifindex),
    );
    const link = BpfLink.fromNative(ptr, `${prog.name} on XDP of ifindex ${ifindex}`);
    try {
      link.pin(pinPath);
    } catch (e) {
      link.close();
      throw e;
    }
    return link;
  }
  // libbpf's attach helper takes no flags, so the link is made with the low-level call and handed to
  // libbpf through its pin.
  const opts = new Uint8Array(16); // struct bpf_link_create_opts { size_t sz; __u32 flags; ... }
  const dv = new DataView(opts.buffer);
  dv.setBigUint64(0, BigInt(opts.length), true);
  dv.setUint32(8, XDP_FLAGS_SKB_MODE, true);
  const fd = checkLibbpf(
    `bpf_link_create(${prog.name}, ifindex ${ifindex}, BPF_XDP, generic mode)`,
    libbpf().bpf_link_create(prog.fd, ifindex, BPF_XDP, opts),
  );
  try {
    pinFd(fd, pinPath);
  } finally {
    closeFd(fd);
  }
  return BpfLink.openPinned(pinPath);
}
