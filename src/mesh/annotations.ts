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
// - Port lists are stored as ranges, sorted and merged: "80,81,82" and "80-82" are the same single
//   entry, and a Linkerd "8000-9000" is one entry too, never expanded port by port.
// - The BPF maps hold a fixed number of entries. Past that capacity the first entries are kept and one
//   warning names the first item that was dropped.
// - CIDR items: "a.b.c.d/n", or a bare address meaning /32. A network written with host bits set
//   ("10.1.2.3/8") is applied as its network (10.0.0.0/8), the same networks iptables would match,
//   and a warning says so since the author probably meant something narrower. IPv6 items
//   ("fd00::/8", a bare address meaning /128) are kept the same way; each family has its own capacity,
//   and a list holds its IPv4 networks first, then its IPv6 ones, in the order given. An IPv4-mapped
//   IPv6 range (::ffff:0:0/96 and inside) is refused: IPv4 traffic is matched by IPv4 ranges only,
//   as iptables and ip6tables each see only their own family.
import { MAX_CIDRS, MAX_PORT_RANGES } from "../generated/bpf_types.ts";
import type { Cidr, CidrList, PolicyWarning, PortList, PortRange } from "./types.ts";
import { formatIpv4, parseIpv4, prefixMask } from "./ipv4.ts";
import { formatIpv6, isV4Mapped, maskIpv6, parseIpv6 } from "./ipv6.ts";

export const WILDCARD = "*";

export interface PortListOptions {
  /** Accept "low-high" items (Linkerd's syntax; Istio, Kuma and OSM take single ports only). */
  ranges?: boolean;
  /** Maximum number of ranges kept after merging; MAX_PORT_RANGES by default. */
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

/**
 * `ranges` with `r` added: the result is sorted by `from`, and `r` is merged with every range it
 * overlaps or touches (10-20 and 21-30 become 10-30), so the count is the number of entries the BPF
 * list needs. Neither argument is modified.
 */
export function addPortRange(ranges: readonly PortRange[], r: PortRange): PortRange[] {
  const out: PortRange[] = [];
  let merged: PortRange = { from: r.from, to: r.to };
  let placed = false;
  for (const x of ranges) {
    if (x.to + 1 < merged.from) {
      out.push({ ...x });
    } else if (merged.to + 1 < x.from) {
      if (!placed) out.push(merged);
      placed = true;
      out.push({ ...x });
    } else {
      merged = { from: Math.min(merged.from, x.from), to: Math.max(merged.to, x.to) };
    }
  }
  if (!placed) out.push(merged);
  return out;
}

/** Whether `port` is in the list ("*" holds every port). */
export function portListHas(list: PortList, port: number): boolean {
  return list.all || list.ranges.some((r) => r.from <= port && port <= r.to);
}

/** A range as annotations write it: "8080" or "8000-9000". */
export function formatPortRange(r: PortRange): string {
  return r.from === r.to ? String(r.from) : `${r.from}-${r.to}`;
}

/** Parses a port list annotation value. */
export function parsePortList(
  annotation: string,
  value: string,
  opts: PortListOptions = {},
): Parsed<PortList> {
  const capacity = opts.capacity ?? MAX_PORT_RANGES;
  const items = splitList(value);
  if (items.includes(WILDCARD)) {
    return { value: { all: true, ranges: [] }, warnings: wildcardExtras(annotation, items, "port") };
  }

  const warnings: PolicyWarning[] = [];
  let ranges: PortRange[] = [];
  let overflow: PolicyWarning | null = null;

  // Items are taken in the order written. An item that would need one entry more than the list holds
  // is the first dropped, and so is everything after it: "the first entries are kept" stays true
  // whatever the items after the cut would have merged with.
  const add = (r: PortRange, item: string): void => {
    if (overflow) return;
    const next = addPortRange(ranges, r);
    if (next.length > capacity) {
      overflow = warn(
        annotation,
        item,
        `too many ports: at most ${capacity} ranges of consecutive ports are applied; "${item}" and ` +
          `every item after it were dropped`,
      );
      return;
    }
    ranges = next;
  };

  for (const item of items) {
    const single = portNumber(item);
    if (single !== null) {
      add({ from: single, to: single }, item);
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
      add({ from: lo, to: hi }, item);
      continue;
    }
    const reason = DIGITS.test(item) ? "port out of range 1..65535; ignored" : "not a port number; ignored";
    warnings.push(warn(annotation, item, reason));
  }
  if (overflow) warnings.push(overflow);
  return { value: { all: false, ranges }, warnings };
}

/** Parses one CIDR item; a string result is the reason it was refused. */
function parseCidrItem(item: string): { cidr: Cidr; hostBits: boolean } | string {
  const slash = item.indexOf("/");
  const addrText = slash < 0 ? item : item.slice(0, slash);
  if (addrText.includes(":")) return parseCidr6Item(addrText, slash < 0 ? "128" : item.slice(slash + 1));
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

function parseCidr6Item(addrText: string, prefixText: string): { cidr: Cidr; hostBits: boolean } | string {
  const addr = parseIpv6(addrText);
  if (!addr) return "not an IPv6 address or CIDR; ignored";
  if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) > 128) {
    return "prefix length must be 0..128; ignored";
  }
  const prefix = Number(prefixText);
  const net = maskIpv6(addr, prefix);
  if (prefix >= 96 && isV4Mapped(net)) {
    return "an IPv4-mapped IPv6 range never matches: IPv4 traffic is matched by IPv4 ranges; ignored";
  }
  return { cidr: { addr: formatIpv6(net), prefix }, hostBits: net.some((x, i) => x !== addr[i]) };
}

/** Parses a CIDR list annotation value (either family; `capacity` applies to each). */
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
  const byFamily: { cidrs: Cidr[]; overflow: PolicyWarning | null }[] = [
    { cidrs: [], overflow: null },
    { cidrs: [], overflow: null },
  ];
  const seen = new Set<string>();

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
    const fam = byFamily[parsed.cidr.addr.includes(":") ? 1 : 0]!;
    if (seen.has(key) || fam.overflow) continue;
    if (fam.cidrs.length >= capacity) {
      const what = fam === byFamily[0] ? "IPv4" : "IPv6";
      fam.overflow = warn(
        annotation,
        item,
        `too many ${what} ranges: at most ${capacity} are applied; "${item}" and every ${what} item after it were dropped`,
      );
      continue;
    }
    seen.add(key);
    fam.cidrs.push(parsed.cidr);
  }
  for (const f of byFamily) if (f.overflow) warnings.push(f.overflow);
  return { value: { all: false, cidrs: [...byFamily[0]!.cidrs, ...byFamily[1]!.cidrs] }, warnings };
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
