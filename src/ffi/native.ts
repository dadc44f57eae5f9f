// Conversions at the FFI boundary: JS strings to NUL-terminated C strings and back, and errno.
import { libc } from "./library.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A NUL-terminated UTF-8 copy of `s`, for `const char *` parameters. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  if (s.includes("\0")) {
    throw new TypeError(`string passed to native code contains a NUL byte: ${JSON.stringify(s)}`);
  }
  const bytes = encoder.encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Reads a C string owned by native code; undefined for NULL. */
export function readCString(ptr: Deno.PointerValue): string | undefined {
  if (ptr === null) return undefined;
  return Deno.UnsafePointerView.getCString(ptr);
}

/** Decodes a fixed-size char array (e.g. a name field of a kernel struct) up to its first NUL. */
export function decodeCChars(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return decoder.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/**
 * This thread's errno. Only meaningful when read synchronously right after the failing native
 * call: any other native call in between (including Deno's own) may overwrite it.
 */
export function lastErrno(): number {
  const loc = libc().__errno_location();
  if (loc === null) return 0;
  return new Deno.UnsafePointerView(loc).getInt32();
}

/**
 * `bytes` as FFI "buffer" parameters accept it: views over a plain ArrayBuffer pass through (native
 * code then writes into the caller's memory), views over shared memory are copied.
 */
export function asBuffer(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  if (bytes.buffer instanceof ArrayBuffer) return bytes as Uint8Array<ArrayBuffer>;
  const out = new Uint8Array(bytes.length);
  out.set(bytes);
  return out;
}
