// Typed libc calls that throw LibcError, for what Deno cannot do itself: raw fds of directories and
// namespaces, setns, sockets carrying SO_MARK, ioctls. All synchronous on purpose: after setns only
// the calling thread is in the new namespace, so the work that follows must stay on it.
import { LibcError } from "./errors.ts";
import { libc } from "./library.ts";
import { asBuffer, cString, lastErrno } from "./native.ts";
import { joinChunks } from "../util/bytes.ts";

export const O_RDONLY = 0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_DIRECTORY = 0o200000;
export const O_CLOEXEC = 0o2000000;

export const CLONE_NEWNET = 0x40000000;

export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SOL_IP = 0;
export const SO_REUSEADDR = 2;
export const SO_MARK = 36;

const SOCKADDR_IN_SIZE = 16;
// struct statfs is 120 bytes on x86-64 and arm64 with f_type (a long) first; the margin guards
// against a libc that writes a few more spare fields.
const STATFS_SIZE = 256;

function check(op: string, ret: number): number {
  if (ret === -1) throw new LibcError(op, lastErrno());
  return ret;
}

/** open(2); O_CLOEXEC is always added so fds never leak into spawned children. */
export function openFd(path: string, flags: number, mode = 0): number {
  return check(`open(${path})`, libc().open(cString(path), flags | O_CLOEXEC, mode));
}

/** Reads `fd` to its end (for small kernel-generated files such as a BPF iterator's output). */
export function readAllFd(fd: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  for (;;) {
    const buf = new Uint8Array(65536);
    const n = Number(libc().read(fd, buf, BigInt(buf.length)));
    if (n === -1) throw new LibcError(`read(${fd})`, lastErrno());
    if (n === 0) break;
    chunks.push(buf.subarray(0, n));
  }
  return joinChunks(chunks);
}

export function closeFd(fd: number): void {
  check(`close(${fd})`, libc().close(fd));
}

/** setns(2): moves the calling thread into the namespace `fd` refers to. */
export function setnsFd(fd: number, nstype: number): void {
  check(`setns(${fd}, 0x${nstype.toString(16)})`, libc().setns(fd, nstype));
}

export function socketFd(domain: number, type: number, protocol = 0): number {
  return check(
    `socket(${domain}, ${type}, ${protocol})`,
    libc().socket(domain, type | SOCK_CLOEXEC, protocol),
  );
}

export function setsockoptInt(fd: number, level: number, optname: number, value: number): void {
  const buf = new Uint8Array(4);
  new DataView(buf.buffer).setInt32(0, value, true);
  check(`setsockopt(${fd}, ${level}, ${optname})`, libc().setsockopt(fd, level, optname, buf, 4));
}

export function getsockoptInt(fd: number, level: number, optname: number): number {
  const buf = new Uint8Array(4);
  const len = new Uint32Array([4]);
  check(
    `getsockopt(${fd}, ${level}, ${optname})`,
    libc().getsockopt(fd, level, optname, buf, new Uint8Array(len.buffer)),
  );
  return new DataView(buf.buffer).getInt32(0, true);
}

/** struct sockaddr_in for a dotted-quad address and a host-order port. */
export function sockaddrIn4(address: string, port: number): Uint8Array<ArrayBuffer> {
  const octets = address.split(".").map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255))) {
    throw new TypeError(`not an IPv4 address: ${JSON.stringify(address)}`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`not a port number: ${port}`);
  }
  const buf = new Uint8Array(SOCKADDR_IN_SIZE);
  const view = new DataView(buf.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port, false);
  buf.set(octets, 4);
  return buf;
}

/** Decodes a struct sockaddr_in into its address and host-order port. */
export function parseSockaddrIn4(buf: Uint8Array): { address: string; port: number } {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 8 || view.getUint16(0, true) !== AF_INET) {
    throw new TypeError("not a struct sockaddr_in (family is not AF_INET)");
  }
  return { address: Array.from(buf.subarray(4, 8)).join("."), port: view.getUint16(2, false) };
}

export function bindInet4(fd: number, address: string, port: number): void {
  check(
    `bind(${fd}, ${address}:${port})`,
    libc().bind(fd, sockaddrIn4(address, port), SOCKADDR_IN_SIZE),
  );
}

export function connectInet4(fd: number, address: string, port: number): void {
  check(
    `connect(${fd}, ${address}:${port})`,
    libc().connect(fd, sockaddrIn4(address, port), SOCKADDR_IN_SIZE),
  );
}

export function listenFd(fd: number, backlog = 128): void {
  check(`listen(${fd})`, libc().listen(fd, backlog));
}

/** accept(2) without the peer address; the returned fd is blocking unless the listener was not. */
export function acceptFd(fd: number): number {
  return check(`accept(${fd})`, libc().accept(fd, null, null));
}

/** The local address a socket is bound to (useful after binding port 0). */
export function sockNameInet4(fd: number): { address: string; port: number } {
  const buf = new Uint8Array(SOCKADDR_IN_SIZE);
  const len = new Uint32Array([SOCKADDR_IN_SIZE]);
  check(`getsockname(${fd})`, libc().getsockname(fd, buf, new Uint8Array(len.buffer)));
  return parseSockaddrIn4(buf);
}

/** if_nametoindex(3) in the calling thread's network namespace. */
export function ifNameToIndex(name: string): number {
  const index = libc().if_nametoindex(cString(name));
  if (index === 0) {
    throw new LibcError(`if_nametoindex(${name})`, lastErrno());
  }
  return index;
}

/** ioctl(2) with a pointer argument; `arg` is read and written in place. */
export function ioctlPtr(fd: number, request: number | bigint, arg: Uint8Array): number {
  const req = BigInt(request);
  return check(`ioctl(${fd}, 0x${req.toString(16)})`, libc().ioctl(fd, req, asBuffer(arg)));
}

const CLOCK_MONOTONIC = 1;

/** CLOCK_MONOTONIC in nanoseconds: the clock bpf_ktime_get_ns() reads. */
export function monotonicNs(): bigint {
  const ts = new BigInt64Array(2);
  check("clock_gettime(CLOCK_MONOTONIC)", libc().clock_gettime(CLOCK_MONOTONIC, new Uint8Array(ts.buffer)));
  return ts[0]! * 1_000_000_000n + ts[1]!;
}

export function getPid(): number {
  return libc().getpid();
}

/** statfs(2)'s f_type: the filesystem magic number of the filesystem holding `path`. */
export function statfsType(path: string): bigint {
  const buf = new Uint8Array(STATFS_SIZE);
  check(`statfs(${path})`, libc().statfs(cString(path), buf));
  return new DataView(buf.buffer).getBigInt64(0, true);
}
