// Interface settings read and written with ioctls, so the image needs no ethtool or ip binary: the
// transmit checksum offload (SIOCETHTOOL) and the interface's IPv4 address (SIOCGIFADDR). Offload must
// be off on a pod's veth when an XDP program rewrites ports incrementally: with offload the checksum
// field holds only a partial sum until a later hop completes it.
import { AF_INET, closeFd, ioctlPtr, SOCK_DGRAM, socketFd } from "../ffi/libc.ts";

const SIOCETHTOOL = 0x8946;
const ETHTOOL_GTXCSUM = 0x16;
const ETHTOOL_STXCSUM = 0x17;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

function ethtoolValue(ifname: string, cmd: number, data: number): number {
  if (ifname.length === 0 || ifname.length >= IFNAMSIZ) {
    throw new RangeError(`invalid interface name ${ifname}`);
  }
  const value = new Uint8Array(8);
  const dv = new DataView(value.buffer);
  dv.setUint32(0, cmd, true);
  dv.setUint32(4, data, true);
  const ifr = new Uint8Array(IFREQ_SIZE);
  ifr.set(new TextEncoder().encode(ifname));
  // ifr_data is a pointer to the ethtool_value struct.
  const ptr = Deno.UnsafePointer.value(Deno.UnsafePointer.of(value));
  new DataView(ifr.buffer).setBigUint64(IFNAMSIZ, BigInt(ptr), true);
  const fd = socketFd(AF_INET, SOCK_DGRAM);
  try {
    ioctlPtr(fd, SIOCETHTOOL, ifr);
  } finally {
    closeFd(fd);
  }
  return dv.getUint32(4, true);
}

/** Whether tx checksum offload is on, in the calling thread's network namespace. */
export function txChecksumEnabled(ifname: string): boolean {
  return ethtoolValue(ifname, ETHTOOL_GTXCSUM, 0) !== 0;
}

export function setTxChecksum(ifname: string, on: boolean): void {
  ethtoolValue(ifname, ETHTOOL_STXCSUM, on ? 1 : 0);
}

const SIOCGIFADDR = 0x8915;

/** The primary IPv4 address of an interface in the calling thread's namespace, or undefined. */
export function interfaceIpv4(ifname: string): string | undefined {
  if (ifname.length === 0 || ifname.length >= IFNAMSIZ) {
    throw new RangeError(`invalid interface name ${ifname}`);
  }
  const ifr = new Uint8Array(IFREQ_SIZE);
  ifr.set(new TextEncoder().encode(ifname));
  new DataView(ifr.buffer).setUint16(IFNAMSIZ, AF_INET, true);
  const fd = socketFd(AF_INET, SOCK_DGRAM);
  try {
    ioctlPtr(fd, SIOCGIFADDR, ifr);
  } catch {
    return undefined; // no IPv4 address (EADDRNOTAVAIL) or no such interface
  } finally {
    closeFd(fd);
  }
  return Array.from(ifr.subarray(IFNAMSIZ + 4, IFNAMSIZ + 8)).join(".");
}
