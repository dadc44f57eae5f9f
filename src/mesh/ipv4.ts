// IPv4 address arithmetic shared by the annotation parser and the decision model. Addresses are
// unsigned 32-bit numbers in host order, so `(ip & mask) === net` compares the way the BPF side does
// once both sides have agreed on the byte order.
import type { Cidr } from "./types.ts";

const OCTET = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Parses a dotted-quad IPv4 address into an unsigned 32-bit number, or returns null.
 * Octets with leading zeros ("010.0.0.1") are refused: some tools read them as octal, so the intent is
 * ambiguous and guessing would silently exclude the wrong network.
 */
export function parseIpv4(text: string): number | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!OCTET.test(part)) return null;
    const octet = Number(part);
    if (octet > 255) return null;
    value = value * 256 + octet;
  }
  return value;
}

export function formatIpv4(value: number): string {
  const v = value >>> 0;
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** The netmask of a prefix length 0..32 as an unsigned 32-bit number. */
export function prefixMask(prefix: number): number {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) {
    throw new RangeError(`IPv4 prefix length must be an integer 0..32, got ${prefix}`);
  }
  // `<< 32` is a no-op in JavaScript, hence the explicit /0 case.
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** True when `ip` (unsigned 32-bit) lies inside `cidr`. */
export function cidrContains(cidr: Cidr, ip: number): boolean {
  const net = parseIpv4(cidr.addr);
  if (net === null) throw new TypeError(`CIDR network address is not IPv4: "${cidr.addr}"`);
  const mask = prefixMask(cidr.prefix);
  return ((ip & mask) >>> 0) === ((net & mask) >>> 0);
}

export function formatCidr(cidr: Cidr): string {
  return `${cidr.addr}/${cidr.prefix}`;
}
