// IPv6 address text and the 16-byte form the datapath keys on. The maps hold every address in 16
// bytes, an IPv4 one written ::ffff:a.b.c.d (RFC 4291 2.5.5.2), so one key type serves both families
// and an AF_INET6 socket talking to an IPv4 peer finds the same entries as an AF_INET one.
import { formatIpv4, parseIpv4 } from "./ipv4.ts";

const HEX = /^[0-9a-fA-F]{1,4}$/;

/**
 * Parses IPv6 text (RFC 4291 2.2: "::" compression, a dotted IPv4 tail) into 16 bytes, or null.
 * Zone ids ("%eth0") and brackets are refused: an annotation or pod IP never carries them.
 */
export function parseIpv6(text: string): Uint8Array | null {
  if (!text.includes(":") || text.length > 45) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const words = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIpv4(p);
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (HEX.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = words(halves[0]!);
  const tail = halves.length === 2 ? words(halves[1]!) : [];
  if (!head || !tail) return null;
  // A dotted tail may only end the address.
  if (halves.length === 2 && halves[0]!.includes(".")) return null;
  const n = head.length + tail.length;
  if (halves.length === 2 ? n > 7 : n !== 8) return null;
  const all = [...head, ...Array(8 - n).fill(0), ...tail];
  const b = new Uint8Array(16);
  all.forEach((w, i) => {
    b[2 * i] = w >>> 8;
    b[2 * i + 1] = w & 0xff;
  });
  return b;
}

/** RFC 5952 text: lower case, the longest run of two or more zero words as "::". */
export function formatIpv6(b: Uint8Array): string {
  const w = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(w);
  return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

/** ::ffff:a.b.c.d */
export function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Either family as the datapath's 16 bytes: "a.b.c.d" becomes ::ffff:a.b.c.d. Null when neither.
 */
export function parseIp16(text: string): Uint8Array | null {
  const v4 = parseIpv4(text);
  if (v4 !== null) {
    const b = new Uint8Array(16);
    b[10] = b[11] = 0xff;
    new DataView(b.buffer).setUint32(12, v4);
    return b;
  }
  return parseIpv6(text);
}

/** The text of 16 datapath bytes: an IPv4-mapped address as plain dotted IPv4, anything else as IPv6. */
export function formatIp16(b: Uint8Array): string {
  if (isV4Mapped(b)) return formatIpv4(new DataView(b.buffer, b.byteOffset + 12, 4).getUint32(0));
  return formatIpv6(b);
}

/** 4 for dotted IPv4 text, 6 for IPv6 text (a v4-mapped one included), null for neither. */
export function ipFamily(text: string): 4 | 6 | null {
  if (parseIpv4(text) !== null) return 4;
  return parseIpv6(text) ? 6 : null;
}

/** The netmask of an IPv6 prefix length 0..128, 16 bytes. */
export function prefixMask6(prefix: number): Uint8Array {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 128) {
    throw new RangeError(`IPv6 prefix length must be an integer 0..128, got ${prefix}`);
  }
  const m = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefix - 8 * i));
    m[i] = (0xff00 >> bits) & 0xff;
  }
  return m;
}

/** `addr` with every bit past `prefix` cleared. */
export function maskIpv6(addr: Uint8Array, prefix: number): Uint8Array {
  const m = prefixMask6(prefix);
  return addr.map((x, i) => x & m[i]!);
}

/** The prefix length of a contiguous IPv6 netmask. */
export function prefixOf6(mask: Uint8Array): number {
  let n = 0;
  for (const x of mask) n += x.toString(2).split("").filter((c) => c === "1").length;
  return n;
}

/** True when IPv6 `ip` (16 bytes) lies in `net`/`prefix`. */
export function cidr6Contains(net: Uint8Array, prefix: number, ip: Uint8Array): boolean {
  const m = prefixMask6(prefix);
  for (let i = 0; i < 16; i++) if ((ip[i]! & m[i]!) !== (net[i]! & m[i]!)) return false;
  return true;
}
