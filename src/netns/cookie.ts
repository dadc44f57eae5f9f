// Network namespace cookies: the 64-bit id bpf_get_netns_cookie() returns for a namespace, read from
// userspace through a socket living in it (SO_NETNS_COOKIE, Linux 5.14+). Unlike an inode number a
// cookie is never reused while the machine runs, so a map keyed by it cannot mistake a new namespace
// for a deleted one.
import { AF_INET, closeFd, SOCK_DGRAM, socketFd, SOL_SOCKET } from "../ffi/libc.ts";
import { LibcError } from "../ffi/errors.ts";
import { libc } from "../ffi/library.ts";
import { lastErrno } from "../ffi/native.ts";

const SO_NETNS_COOKIE = 71;

/** The cookie of the network namespace socket `fd` lives in. */
export function socketNetnsCookie(fd: number): bigint {
  const buf = new Uint8Array(8);
  const len = new Uint32Array([8]);
  const ret = libc().getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, buf, new Uint8Array(len.buffer));
  if (ret !== 0) throw new LibcError("getsockopt(SO_NETNS_COOKIE)", lastErrno());
  return new DataView(buf.buffer).getBigUint64(0, true);
}

/** The cookie of the calling thread's network namespace (inside withNetns: the entered one). */
export function currentNetnsCookie(): bigint {
  const fd = socketFd(AF_INET, SOCK_DGRAM);
  try {
    return socketNetnsCookie(fd);
  } finally {
    closeFd(fd);
  }
}
