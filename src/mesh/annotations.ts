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
//   and a warning says so since the author probably meant something narrower. IPv6 items are ignored
//   with a warning: the datapath is IPv4 only.
import { MAX_CIDRS, MAX_PORT_RANGES } from "./types.ts";
import type { Cidr4, CidrList, PolicyWarning, PortList, PortRange } from "./types.ts";
import { formatIpv4, parseIpv4, prefixMask } from "./ipv4.ts";

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
