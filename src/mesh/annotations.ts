// Parsing of the list-valued pod annotations meshes use to tune interception.
//
// Rules shared by every list:
// - Items are separated by commas; whitespace around an item is ignored and empty items are skipped,
//   so "80, 443," is the two ports 80 and 443.
// - "*" means "all". Any other item next to "*" is redundant and reported.
// - Bad items never fail the pod: each one yields a PolicyWarning naming the annotation and the item,
//   and the remaining items still apply. Pod annotations are written by people; refusing the whole pod
//   for one typo would take its traffic out of the mesh, which is worse than skipping the typo.
// - Duplicates are dropped silently and do not use up capacity.
// - The BPF maps hold a fixed number of entries. Past that capacity the first entries are kept and one
//   warning names the first item that was dropped.
// - CIDR items: "a.b.c.d/n", or a bare address meaning /32. A network written with host bits set
//   ("10.1.2.3/8") is applied as its network (10.0.0.0/8), the same networks iptables would match,
//   and a warning says so since the author probably meant something narrower. IPv6 items are ignored
//   with a warning: the datapath is IPv4 only.
import { MAX_CIDRS, MAX_PORTS } from "./types.ts";
import type { Cidr4, CidrList, PolicyWarning, PortList } from "./types.ts";
import { formatIpv4, parseIpv4, prefixMask } from "./ipv4.ts";

export const WILDCARD = "*";

export interface PortListOptions {
  /** Accept "low-high" items (Linkerd's syntax), expanded to every port in between. */
  ranges?: boolean;
  /** Maximum number of distinct ports kept; MAX_PORTS by default. */
  capacity?: number;
}

export interface Parsed<T> {
  value: T;
  warnings: PolicyWarning[];
}

/** Splits a comma-separated annotation value into trimmed, non-empty items. */
export function splitList(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

const DIGITS = /^[0-9]+$/;
const RANGE = /^([0-9]+)\s*-\s*([0-9]+)$/;

function portNumber(text: string): number | null {
  if (!DIGITS.test(text)) return null;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : null;
}

function warn(annotation: string, item: string, reason: string): PolicyWarning {
  return { annotation, item, reason };
}

function wildcardExtras(annotation: string, items: string[], what: string): PolicyWarning[] {
  return items.filter((i) => i !== WILDCARD).map((i) =>
    warn(annotation, i, `redundant: "*" in the same list already means every ${what}`)
  );
}

/** Parses a port list annotation value. */
export function parsePortList(
  annotation: string,
  value: string,
  opts: PortListOptions = {},
): Parsed<PortList> {
  const capacity = opts.capacity ?? MAX_PORTS;
  const items = splitList(value);
  if (items.includes(WILDCARD)) {
    return { value: { all: true, ports: [] }, warnings: wildcardExtras(annotation, items, "port") };
  }

  const warnings: PolicyWarning[] = [];
  const ports: number[] = [];
  const seen = new Set<number>();
  let overflow: PolicyWarning | null = null;

  const add = (port: number, item: string, rangeEnd?: number): void => {
    if (seen.has(port) || overflow) return;
    if (ports.length >= capacity) {
      const dropped = rangeEnd !== undefined && rangeEnd > port
        ? `ports ${port}-${rangeEnd} of "${item}"`
        : `"${item}"`;
      overflow = warn(
        annotation,
        item,
        `too many ports: at most ${capacity} are applied; ${dropped} and every item after it were dropped`,
      );
      return;
    }
    seen.add(port);
    ports.push(port);
  };

  for (const item of items) {
    const single = portNumber(item);
    if (single !== null) {
      add(single, item);
      continue;
    }
    const range = RANGE.exec(item);
    if (range) {
      if (!opts.ranges) {
        warnings.push(warn(annotation, item, "port ranges are not accepted in this annotation; ignored"));
        continue;
      }
      const lo = portNumber(range[1] ?? "");
      const hi = portNumber(range[2] ?? "");
      if (lo === null || hi === null || lo > hi) {
        warnings.push(
          warn(annotation, item, "not a port range low-high with 1 <= low <= high <= 65535; ignored"),
        );
        continue;
      }
      for (let p = lo; p <= hi && !overflow; p++) add(p, item, hi);
      continue;
    }
    const reason = DIGITS.test(item) ? "port out of range 1..65535; ignored" : "not a port number; ignored";
    warnings.push(warn(annotation, item, reason));
  }
  if (overflow) warnings.push(overflow);
  return { value: { all: false, ports }, warnings };
}

/** Parses one CIDR item; a string result is the reason it was refused. */
function parseCidrItem(item: string): { cidr: Cidr4; hostBits: boolean } | string {
  if (item.includes(":")) return "IPv6 is not supported by the IPv4 datapath; ignored";
  const slash = item.indexOf("/");
  const addrText = slash < 0 ? item : item.slice(0, slash);
  const prefixText = slash < 0 ? "32" : item.slice(slash + 1);
  const addr = parseIpv4(addrText);
  if (addr === null) return "not an IPv4 address or CIDR; ignored";
  if (!/^[0-9]{1,2}$/.test(prefixText) || Number(prefixText) > 32) {
    return "prefix length must be 0..32; ignored";
  }
  const prefix = Number(prefixText);
  const net = (addr & prefixMask(prefix)) >>> 0;
  return { cidr: { addr: formatIpv4(net), prefix }, hostBits: net !== addr };
}

/** Parses an IPv4 CIDR list annotation value. */
export function parseCidrList(
  annotation: string,
  value: string,
  capacity: number = MAX_CIDRS,
): Parsed<CidrList> {
  const items = splitList(value);
  if (items.includes(WILDCARD)) {
    return { value: { all: true, cidrs: [] }, warnings: wildcardExtras(annotation, items, "address") };
  }

  const warnings: PolicyWarning[] = [];
  const cidrs: Cidr4[] = [];
  const seen = new Set<string>();
  let overflow: PolicyWarning | null = null;

  for (const item of items) {
    const parsed = parseCidrItem(item);
    if (typeof parsed === "string") {
      warnings.push(warn(annotation, item, parsed));
      continue;
    }
    const key = `${parsed.cidr.addr}/${parsed.cidr.prefix}`;
    if (parsed.hostBits) {
      warnings.push(warn(annotation, item, `host bits are set; applied as ${key}`));
    }
    if (seen.has(key) || overflow) continue;
    if (cidrs.length >= capacity) {
      overflow = warn(
        annotation,
        item,
        `too many ranges: at most ${capacity} are applied; "${item}" and every item after it were dropped`,
      );
      continue;
    }
    seen.add(key);
    cidrs.push(parsed.cidr);
  }
  if (overflow) warnings.push(overflow);
  return { value: { all: false, cidrs }, warnings };
}

/**
 * Parses a single port annotation (a status or probe port). "0" means "none" and yields 0. Anything
 * unparsable yields `fallback` with a warning.
 */
export function parseSinglePort(annotation: string, value: string, fallback: number): Parsed<number> {
  const v = value.trim();
  if (v === "0") return { value: 0, warnings: [] };
  const port = portNumber(v);
  if (port !== null) return { value: port, warnings: [] };
  return {
    value: fallback,
    warnings: [warn(annotation, v, `not a port 0..65535; using ${fallback === 0 ? "none" : fallback}`)],
  };
}
