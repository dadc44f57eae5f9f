// Attachments made with BPF_PROG_ATTACH rather than a link, for hooks that have no link type in the
// kernels and libbpf we support (sk_msg on a sockmap/sockhash), and BPF_PROG_QUERY to list what is
// attached to a cgroup. Such attachments belong to the target, not to our fds: they stay until
// detached explicitly (or until the target goes away).
import { BpfError, checkLibbpf } from "../ffi/errors.ts";
import { Errno } from "../ffi/errno.ts";
import { closeFd, O_DIRECTORY, O_RDONLY, openFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { AttachType, attachTypeName } from "./types.ts";

/** Anything with a loaded program fd: a BpfProgram, or a program opened by id. */
export interface ProgramFd {
  readonly fd: number;
  readonly name?: string;
}

/** BPF_F_ALLOW_MULTI: several programs may share the hook. */
export const BPF_F_ALLOW_MULTI = 2;
/** BPF_F_QUERY_EFFECTIVE: list what runs for the cgroup, inherited programs included. */
export const BPF_F_QUERY_EFFECTIVE = 1;

function label(prog: ProgramFd): string {
  return prog.name ?? `prog fd ${prog.fd}`;
}

/** bpf_prog_attach(prog, target, type, flags). */
export function progAttach(prog: ProgramFd, targetFd: number, attachType: number, flags = 0): void {
  checkLibbpf(
    `bpf_prog_attach(${label(prog)}, fd ${targetFd}, ${attachTypeName(attachType)})`,
    libbpf().bpf_prog_attach(prog.fd, targetFd, attachType, flags),
  );
}

/** bpf_prog_detach2(prog, target, type): detaches exactly this program. */
export function progDetach(prog: ProgramFd, targetFd: number, attachType: number): void {
  checkLibbpf(
    `bpf_prog_detach2(${label(prog)}, fd ${targetFd}, ${attachTypeName(attachType)})`,
    libbpf().bpf_prog_detach2(prog.fd, targetFd, attachType),
  );
}

/**
 * Attaches an sk_msg program as the verdict program of a sockmap/sockhash: it then runs for every
 * sendmsg on sockets in that map. Re-attaching the same program is a no-op for the kernel.
 */
export function attachSkMsg(prog: ProgramFd, mapFd: number): void {
  progAttach(prog, mapFd, AttachType.SK_MSG_VERDICT);
}

/** Removes the sk_msg verdict program; false when it was not attached. */
export function detachSkMsg(prog: ProgramFd, mapFd: number): boolean {
  try {
    progDetach(prog, mapFd, AttachType.SK_MSG_VERDICT);
    return true;
  } catch (err) {
    if (err instanceof BpfError && err.errno === Errno.ENOENT) return false;
    throw err;
  }
}

export interface CgroupAttachments {
  /** BPF_F_ALLOW_OVERRIDE / BPF_F_ALLOW_MULTI of the hook (0 for links only). */
  attachFlags: number;
  /** Kernel ids of the attached programs, in run order. */
  progIds: number[];
}

/**
 * The programs attached to `cgroupPath` for `attachType` (links included). With `effective`, the
 * programs that actually run there, inherited from ancestors included.
 */
export function cgroupQuery(
  cgroupPath: string,
  attachType: number,
  opts: { effective?: boolean } = {},
): CgroupAttachments {
  const fd = openFd(cgroupPath, O_RDONLY | O_DIRECTORY);
  try {
    let capacity = 64;
    for (;;) {
      const flags = new Uint32Array(1);
      const ids = new Uint32Array(capacity);
      const count = new Uint32Array([capacity]);
      const ret = libbpf().bpf_prog_query(
        fd,
        attachType,
        opts.effective ? BPF_F_QUERY_EFFECTIVE : 0,
        new Uint8Array(flags.buffer),
        new Uint8Array(ids.buffer),
        new Uint8Array(count.buffer),
      );
      // ENOSPC: more programs than room; count now holds the real number.
      if (ret === -Errno.ENOSPC && (count[0] ?? 0) > capacity) {
        capacity = count[0] ?? capacity * 2;
        continue;
      }
      checkLibbpf(`bpf_prog_query(${cgroupPath}, ${attachTypeName(attachType)})`, ret);
      return { attachFlags: flags[0] ?? 0, progIds: Array.from(ids.subarray(0, count[0] ?? 0)) };
    }
  } finally {
    closeFd(fd);
  }
}
