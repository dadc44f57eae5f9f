// Typed errors for native calls. The thin wrappers in src/ffi and src/bpf turn every failing return
// code into one of these, so callers branch on `err.code === "ENOENT"` instead of checking raw
// numbers, and operators read the operation, the text and the number in one line.
import { errnoName } from "./errno.ts";
import { libbpf, libc } from "./library.ts";
import { lastErrno, readCString } from "./native.ts";

export interface NativeErrorOptions {
  /** Extra context appended on its own line (e.g. which map or pin was involved). */
  detail?: string;
  /** Overrides the strerror-style text; used when the library cannot be asked (or in tests). */
  description?: string;
  cause?: unknown;
}

abstract class NativeError extends Error {
  /** The failing operation as the message names it, e.g. "bpf_obj_get(/sys/fs/bpf/x)". */
  readonly op: string;
  /** Positive errno (or libbpf's own code, >= 4000). */
  readonly errno: number;
  /** Symbolic errno, e.g. "ENOENT". */
  readonly code: string;
  readonly description: string;
  readonly detail?: string;

  protected constructor(op: string, errno: number, description: string, opts: NativeErrorOptions) {
    const n = Math.abs(errno);
    super(`${op}: ${description} (errno ${n})${opts.detail ? `\n${opts.detail}` : ""}`, {
      cause: opts.cause,
    });
    this.op = op;
    this.errno = n;
    this.code = errnoName(n);
    this.description = description;
    this.detail = opts.detail;
  }
}

/** A libbpf (or bpf syscall) failure. */
export class BpfError extends NativeError {
  override name = "BpfError";
  /** libbpf's own output while the operation ran (the verifier log for a failed load). */
  readonly log?: string;

  constructor(op: string, errno: number, opts: NativeErrorOptions & { log?: string } = {}) {
    super(op, errno, opts.description ?? describeLibbpfError(errno), opts);
    this.log = opts.log;
  }
}

/** A libc failure (open, setns, socket, ioctl, ...). */
export class LibcError extends NativeError {
  override name = "LibcError";

  constructor(op: string, errno: number, opts: NativeErrorOptions = {}) {
    super(op, errno, opts.description ?? describeLibcError(errno), opts);
  }
}

/** True when `err` is a BpfError or LibcError carrying `errno`. */
export function hasErrno(err: unknown, errno: number): boolean {
  return err instanceof NativeError && err.errno === Math.abs(errno);
}

/** libbpf's text for an error, which also knows libbpf's own codes (>= 4000). */
export function describeLibbpfError(errno: number): string {
  if (errno === 0) return "failed without setting errno";
  try {
    const buf = new Uint8Array(256);
    if (libbpf().libbpf_strerror(-Math.abs(errno), buf, BigInt(buf.length)) === 0) {
      const end = buf.indexOf(0);
      return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
    }
  } catch {
    // Library unavailable: the symbolic name below still identifies the error.
  }
  return errnoName(errno);
}

/** libc's strerror text for an errno. */
export function describeLibcError(errno: number): string {
  if (errno === 0) return "failed without setting errno";
  try {
    return readCString(libc().strerror(Math.abs(errno))) ?? errnoName(errno);
  } catch {
    return errnoName(errno);
  }
}

/** Checks a libbpf int return (>= 0 success, -errno failure); returns it when it is a success. */
export function checkLibbpf(op: string, ret: number): number {
  if (ret < 0) throw new BpfError(op, -ret);
  return ret;
}

/** Checks a libbpf pointer return (NULL + errno on failure). Call it directly after the call. */
export function checkLibbpfPtr(op: string, ptr: Deno.PointerValue): Deno.PointerObject {
  if (ptr === null) throw new BpfError(op, lastErrno());
  return ptr;
}

/** Checks a libc return (-1 + errno on failure). Call it directly after the call. */
export function checkLibc(op: string, ret: number): number {
  if (ret === -1) throw new LibcError(op, lastErrno());
  return ret;
}
