// Interface settings read and written with ioctls, so the image needs no ethtool or ip binary: transmit
// checksum offload and the driver name (SIOCETHTOOL), and the interface's IPv4 address (SIOCGIFADDR).
import { AF_INET, closeFd, ioctlPtr, SOCK_DGRAM, socketFd } from "../ffi/libc.ts";

const SIOCETHTOOL = 0x8946;
const ETHTOOL_GTXCSUM = 0x16;
const ETHTOOL_STXCSUM = 0x17;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

/** A struct ifreq naming `ifname`, its union left zero for the request to fill. */
function ifreq(ifname: string): Uint8Array {
  if (ifname.length === 0 || ifname.length >= IFNAMSIZ) {
    throw new RangeError(`invalid interface name ${ifname}`);
  }
  const ifr = new Uint8Array(IFREQ_SIZE);
  ifr.set(new TextEncoder().encode(ifname));
  return ifr;
}

/** Runs one SIOCETHTOOL command whose argument struct (starting with the u32 cmd) is `arg`. */
function ethtool(ifname: string, arg: Uint8Array): void {
  const ifr = ifreq(ifname);
  // ifr_data points at the command's struct.
  const ptr = Deno.UnsafePointer.value(Deno.UnsafePointer.of(arg));
  new DataView(ifr.buffer).setBigUint64(IFNAMSIZ, BigInt(ptr), true);
  const fd = socketFd(AF_INET, SOCK_DGRAM);
  try {
    ioctlPtr(fd, SIOCETHTOOL, ifr);
  } finally {
    closeFd(fd);
  }
}

function ethtoolValue(ifname: string, cmd: number, data: number): number {
  const value = new Uint8Array(8); // struct ethtool_value { u32 cmd; u32 data; }
  const dv = new DataView(value.buffer);
  dv.setUint32(0, cmd, true);
  dv.setUint32(4, data, true);
  ethtool(ifname, value);
  return dv.getUint32(4, true);
}

const ETHTOOL_GDRVINFO = 0x03;
const DRVINFO_SIZE = 196; // struct ethtool_drvinfo
const DRVINFO_DRIVER = 4; // char driver[32], after u32 cmd

/** The interface's driver name ("veth", "mlx5_core", ...), in the calling thread's namespace. */
export function interfaceDriver(ifname: string): string {
  const info = new Uint8Array(DRVINFO_SIZE);
  new DataView(info.buffer).setUint32(0, ETHTOOL_GDRVINFO, true);
  ethtool(ifname, info);
  const name = info.subarray(DRVINFO_DRIVER, DRVINFO_DRIVER + 32);
  const end = name.indexOf(0);
  return new TextDecoder().decode(end < 0 ? name : name.subarray(0, end));
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
  const ifr = ifreq(ifname);
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
