// The pod identity listener: a TCP socket listening on 0.0.0.0:39807 inside the pod's network namespace
// with SO_MARK set to a key of mark_pod_ips. connect4 looks it up with bpf_sk_lookup_tcp in the
// caller's namespace and reads the mark, which is how a host-wide program learns which pod is calling.
// Only the mark matters: nobody ever connects to it (backlog 1, never accepted).
import {
  AF_INET,
  bindInet4,
  closeFd,
  listenFd,
  setsockoptInt,
  SO_MARK,
  SO_REUSEADDR,
  SOCK_STREAM,
  socketFd,
  SOL_SOCKET,
} from "../ffi/libc.ts";
import { socketNetnsCookie } from "./cookie.ts";
import { MARK_PORT } from "../maps/layouts.ts";
import { withNetns } from "./netns.ts";

const SO_REUSEPORT = 15;

export interface MarkListener {
  fd: number;
  mark: number;
  netnsPath: string;
}

const registry = new FinalizationRegistry<number>((fd) => {
  try {
    closeFd(fd);
  } catch { /* already closed */ }
});

/**
 * Opens the listener in `netnsPath`. SO_REUSEPORT lets a restarting daemon open its own before the
 * previous one's is gone, so the pod never goes unidentified.
 */
export function openMarkListener(netnsPath: string, mark: number): MarkListener {
  if (!Number.isInteger(mark) || mark <= 0 || mark > 0xffffffff) throw new RangeError(`invalid mark ${mark}`);
  return withNetns(netnsPath, () => {
    const fd = socketFd(AF_INET, SOCK_STREAM);
    try {
      setsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      setsockoptInt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
      setsockoptInt(fd, SOL_SOCKET, SO_MARK, mark | 0);
      bindInet4(fd, "0.0.0.0", MARK_PORT);
      listenFd(fd, 1);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    const l = { fd, mark, netnsPath };
    registry.register(l, fd, l);
    return l;
  });
}

export function closeMarkListener(l: MarkListener): void {
  registry.unregister(l);
  closeFd(l.fd);
}

/** The cookie of the network namespace the listener lives in (what bpf_get_netns_cookie returns there). */
export function listenerNetnsCookie(l: MarkListener): bigint {
  return socketNetnsCookie(l.fd);
}

/** A random non-zero 32-bit key; 0 is what every unmarked socket carries. */
export function randomMark(taken: (m: number) => boolean): number {
  const buf = new Uint32Array(1);
  for (;;) {
    crypto.getRandomValues(buf);
    const m = buf[0]!;
    if (m !== 0 && !taken(m)) return m;
  }
}
