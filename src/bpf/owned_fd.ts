// A BPF object fd that one handle (a pinned map, a pinned program, a link) owns: closed by close(),
// or by the garbage collector when the handle is dropped unclosed, so a forgotten handle costs an fd
// for a while, never for the life of the process.
import { BpfError, checkLibbpf } from "../ffi/errors.ts";
import { Errno } from "../ffi/errno.ts";
import { closeFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { cString } from "../ffi/native.ts";

const unclosed = new FinalizationRegistry<number>((fd) => {
  try {
    closeFd(fd);
  } catch {
    // Nothing can be reported from a finalizer; the fd was already gone.
  }
});

export class OwnedFd {
  #fd: number;

  /** Takes `fd`; `what` names the handle in the error of a use after close(). */
  constructor(fd: number, readonly what: string) {
    this.#fd = fd;
    unclosed.register(this, fd, this);
  }

  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.what} is closed`);
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    unclosed.unregister(this);
    closeFd(fd);
  }
}

export type BpfFdKind = "map" | "prog" | "link" | "other";

/** Which kind of BPF object an fd refers to, from the anon inode the kernel names it by. */
export function bpfFdKind(fd: number): BpfFdKind {
  const target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  if (target === "anon_inode:bpf-map") return "map";
  if (target === "anon_inode:bpf-prog") return "prog";
  // Older kernels name it bpf_link, newer ones bpf-link.
  if (target === "anon_inode:bpf_link" || target === "anon_inode:bpf-link") return "link";
  return "other";
}

/**
 * Opens what is pinned at `path`, refusing a pin of another kind than `kind` (EINVAL, saying what it
 * is); throws BpfError ENOENT when nothing is pinned there. The caller owns the fd.
 */
export function openPin(path: string, kind: Exclude<BpfFdKind, "other">): number {
  const fd = checkLibbpf(`bpf_obj_get(${path})`, libbpf().bpf_obj_get(cString(path)));
  const found = bpfFdKind(fd);
  if (found !== kind) {
    closeFd(fd);
    throw new BpfError(`bpf_obj_get(${path})`, Errno.EINVAL, {
      description: `the pin is a BPF ${found}, not a ${kind === "prog" ? "program" : kind}`,
    });
  }
  return fd;
}
