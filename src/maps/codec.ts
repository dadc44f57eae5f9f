// A small C-layout engine: a struct is described once as a field list, and its size, field offsets,
// encoder and decoder follow C's natural alignment rules (what clang does for the BPF target on x86-64).
// Integers are host order (little endian, as the kernel stores map values on x86-64); "ip4" is an IPv4
// address kept in network order, as the programs compare it against packet headers. "ip6" is the
// datapath's 16-byte address of either family (struct addr16): network order, IPv4 written
// ::ffff:a.b.c.d. It encodes dotted IPv4 or IPv6 text and decodes an IPv4-mapped address back to
// dotted IPv4, so IPv4 reads the same whatever the field's width; all zero decodes as "::".

import { formatIp16, parseIp16 } from "../mesh/ipv6.ts";

export type Scalar = "u8" | "u16" | "u32" | "u64" | "ip4" | "ip6";
export interface ArrayType {
  array: FieldType;
  length: number;
}
export type FieldType = Scalar | ArrayType | StructDef;

export interface StructDef {
  /** The C struct's tag (for the datapath, as bpf/common.h spells it); codec errors name it. */
  name: string;
  /** sizeof the C struct, where known (the generated layouts say it): layout() then checks its own. */
  size?: number;
  fields: readonly (readonly [string, FieldType])[];
}

export interface FieldLayout {
  name: string;
  offset: number;
  size: number;
  type: FieldType;
}

export interface StructLayout {
  def: StructDef;
  size: number;
  align: number;
  fields: FieldLayout[];
}

const SCALAR: Record<Scalar, { size: number; align: number }> = {
  u8: { size: 1, align: 1 },
  u16: { size: 2, align: 2 },
  u32: { size: 4, align: 4 },
  u64: { size: 8, align: 8 },
  ip4: { size: 4, align: 4 },
  ip6: { size: 16, align: 4 },
};

const cache = new Map<StructDef, StructLayout>();

function isArray(t: FieldType): t is ArrayType {
  return typeof t === "object" && "array" in t;
}

function sizeAlign(t: FieldType): { size: number; align: number } {
  if (typeof t === "string") return SCALAR[t];
  if (isArray(t)) {
    const e = sizeAlign(t.array);
    return { size: e.size * t.length, align: e.align };
  }
  const l = layout(t);
  return { size: l.size, align: l.align };
}

const roundUp = (n: number, a: number) => Math.ceil(n / a) * a;

export function layout(def: StructDef): StructLayout {
  const hit = cache.get(def);
  if (hit) return hit;
  let off = 0;
  let align = 1;
  const fields: FieldLayout[] = [];
  for (const [name, type] of def.fields) {
    const sa = sizeAlign(type);
    off = roundUp(off, sa.align);
    fields.push({ name, offset: off, size: sa.size, type });
    off += sa.size;
    align = Math.max(align, sa.align);
  }
  const l = { def, size: roundUp(off, align), align, fields };
  if (def.size !== undefined && def.size !== l.size) {
    throw new Error(`struct ${def.name}: the C struct is ${def.size} bytes, its fields lay out as ${l.size}`);
  }
  cache.set(def, l);
  return l;
}

export class CodecError extends Error {
  constructor(struct: string, field: string, msg: string) {
    super(`struct ${struct}.${field}: ${msg}`);
    this.name = "CodecError";
  }
}

export type Value = number | bigint | string | Value[] | { [k: string]: Value };

function writeField(dv: DataView, off: number, t: FieldType, v: Value | undefined, where: [string, string]) {
  if (typeof t === "string") {
    switch (t) {
      case "ip4": {
        const s = v ?? "0.0.0.0";
        if (typeof s !== "string") throw new CodecError(...where, "expected a dotted IPv4 string");
        const b = parseIp4(s);
        if (!b) throw new CodecError(...where, `invalid IPv4 address ${JSON.stringify(s)}`);
        for (let i = 0; i < 4; i++) dv.setUint8(off + i, b[i]!);
        return;
      }
      case "ip6": {
        const s = v ?? "::";
        if (typeof s !== "string") throw new CodecError(...where, "expected an IP address string");
        const b = parseIp16(s);
        if (!b) throw new CodecError(...where, `invalid IP address ${JSON.stringify(s)}`);
        for (let i = 0; i < 16; i++) dv.setUint8(off + i, b[i]!);
        return;
      }
      case "u64": {
        const n = v ?? 0n;
        dv.setBigUint64(off, typeof n === "bigint" ? n : BigInt(n as number), true);
        return;
      }
      default: {
        const n = v ?? 0;
        const max = t === "u8" ? 0xff : t === "u16" ? 0xffff : 0xffffffff;
        if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > max) {
          throw new CodecError(...where, `${JSON.stringify(n)} does not fit ${t}`);
        }
        if (t === "u8") dv.setUint8(off, n);
        else if (t === "u16") dv.setUint16(off, n, true);
        else dv.setUint32(off, n, true);
        return;
      }
    }
  }
  if (isArray(t)) {
    const arr = (v ?? []) as Value[];
    if (!Array.isArray(arr)) throw new CodecError(...where, "expected an array");
    if (arr.length > t.length) {
      throw new CodecError(...where, `${arr.length} items do not fit an array of ${t.length}`);
    }
    const es = sizeAlign(t.array).size;
    for (let i = 0; i < arr.length; i++) writeField(dv, off + i * es, t.array, arr[i], where);
    return;
  }
  writeStruct(dv, off, t, (v ?? {}) as Record<string, Value>);
}

function writeStruct(dv: DataView, base: number, def: StructDef, obj: Record<string, Value>) {
  const l = layout(def);
  for (const k of Object.keys(obj)) {
    if (!l.fields.some((f) => f.name === k)) throw new CodecError(def.name, k, "no such field");
  }
  for (const f of l.fields) writeField(dv, base + f.offset, f.type, obj[f.name], [def.name, f.name]);
}

function readField(dv: DataView, off: number, t: FieldType): Value {
  if (typeof t === "string") {
    switch (t) {
      case "u8":
        return dv.getUint8(off);
      case "u16":
        return dv.getUint16(off, true);
      case "u32":
        return dv.getUint32(off, true);
      case "u64":
        return dv.getBigUint64(off, true);
      case "ip4":
        return [0, 1, 2, 3].map((i) => dv.getUint8(off + i)).join(".");
      case "ip6":
        return formatIp16(new Uint8Array(dv.buffer, dv.byteOffset + off, 16).slice());
    }
  }
  if (isArray(t)) {
    const es = sizeAlign(t.array).size;
    return Array.from({ length: t.length }, (_, i) => readField(dv, off + i * es, t.array));
  }
  return readStruct(dv, off, t);
}

function readStruct(dv: DataView, base: number, def: StructDef): Record<string, Value> {
  const out: Record<string, Value> = {};
  for (const f of layout(def).fields) out[f.name] = readField(dv, base + f.offset, f.type);
  return out;
}

/** Encodes `obj` as `def`; missing fields are zero, unknown fields and out-of-range values throw. */
export function encode(def: StructDef, obj: Record<string, Value>): Uint8Array {
  const buf = new Uint8Array(layout(def).size);
  writeStruct(new DataView(buf.buffer), 0, def, obj);
  return buf;
}

export function decode(def: StructDef, bytes: Uint8Array): Record<string, Value> {
  const l = layout(def);
  if (bytes.byteLength < l.size) {
    throw new CodecError(def.name, "*", `${bytes.byteLength} bytes is shorter than its ${l.size}`);
  }
  return readStruct(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0, def);
}

export function parseIp4(s: string): Uint8Array | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const b = m.slice(1).map(Number);
  if (b.some((x) => x > 255)) return undefined;
  return Uint8Array.from(b);
}

/** An IPv4 address as the 4 network-order bytes of a map key. */
export function ip4Key(ip: string): Uint8Array {
  const b = parseIp4(ip);
  if (!b) throw new Error(`invalid IPv4 address ${JSON.stringify(ip)}`);
  return b;
}

/** An address of either family as the 16 bytes of a map key (struct addr16). */
export function ip16Key(ip: string): Uint8Array {
  const b = parseIp16(ip);
  if (!b) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  return b;
}

export function u32Key(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b;
}

export function u64Key(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}
