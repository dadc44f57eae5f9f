// The BTF of a compiled object, read through libbpf's BTF API: libbpf parses the .BTF section and
// hands out each type's struct btf_type record; this module decodes those records (the layout of
// linux/btf.h, which libbpf's helpers read inline) into plain objects. Needs no privileges: nothing
// is loaded into the kernel.
import { checkLibbpfPtr } from "../ffi/errors.ts";
import { libbpf } from "../ffi/library.ts";
import { cString, readCString } from "../ffi/native.ts";

/** BTF_KIND_* of linux/btf.h. */
export const BtfKind = {
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

export interface BtfMember {
  name: string;
  type: number;
  /** In bits from the start of the struct. */
  bitOffset: number;
  /** 0 unless the member is a bitfield. */
  bitfieldSize: number;
}

export interface BtfEnumValue {
  name: string;
  value: number;
}

export interface BtfSecVar {
  type: number;
  offset: number;
  size: number;
}

export type BtfType =
  | { id: number; kind: "int"; name: string; size: number; signed: boolean; bits: number }
  | {
    id: number;
    kind: "ptr" | "typedef" | "volatile" | "const" | "restrict" | "type_tag";
    name: string;
    type: number;
  }
  | { id: number; kind: "array"; name: string; type: number; length: number }
  | { id: number; kind: "struct" | "union"; name: string; size: number; members: BtfMember[] }
  | { id: number; kind: "enum"; name: string; size: number; signed: boolean; values: BtfEnumValue[] }
  | { id: number; kind: "var"; name: string; type: number }
  | { id: number; kind: "datasec"; name: string; size: number; vars: BtfSecVar[] }
  | { id: number; kind: "other"; name: string; btfKind: number };

const REF_KINDS: Record<number, "ptr" | "typedef" | "volatile" | "const" | "restrict" | "type_tag"> = {
  [BtfKind.PTR]: "ptr",
  [BtfKind.TYPEDEF]: "typedef",
  [BtfKind.VOLATILE]: "volatile",
  [BtfKind.CONST]: "const",
  [BtfKind.RESTRICT]: "restrict",
  [BtfKind.TYPE_TAG]: "type_tag",
};

/** Every type of an object's BTF, indexed by id (0 is void and absent). */
export class Btf {
  private constructor(readonly path: string, readonly types: ReadonlyMap<number, BtfType>) {}

  /** Parses the BTF of an ELF object (or a raw BTF file) at `path`. */
  static parse(path: string): Btf {
    const lib = libbpf();
    const btf = checkLibbpfPtr(`btf__parse ${path}`, lib.btf__parse(cString(path), null));
    try {
      const name = (off: number) => readCString(lib.btf__name_by_offset(btf, off)) ?? "";
      const types = new Map<number, BtfType>();
      const count = lib.btf__type_cnt(btf);
      for (let id = 1; id < count; id++) {
        const ptr = checkLibbpfPtr(`btf__type_by_id ${id}`, lib.btf__type_by_id(btf, id));
        types.set(id, decodeType(id, new Deno.UnsafePointerView(ptr), name));
      }
      return new Btf(path, types);
    } finally {
      lib.btf__free(btf);
    }
  }

  get(id: number): BtfType {
    const t = this.types.get(id);
    if (!t) throw new Error(`${this.path}: no BTF type ${id}`);
    return t;
  }

  /** The named type of one kind; undefined when the object has none. */
  find<K extends BtfType["kind"]>(kind: K, name: string): (BtfType & { kind: K }) | undefined {
    for (const t of this.types.values()) {
      if (t.kind === kind && t.name === name) return t as BtfType & { kind: K };
    }
    return undefined;
  }

  /** Follows typedefs and qualifiers to the type they name. */
  resolve(id: number): BtfType {
    let t = this.get(id);
    while (t.kind === "typedef" || t.kind === "const" || t.kind === "volatile" || t.kind === "restrict") {
      t = this.get(t.type);
    }
    return t;
  }
}

// struct btf_type: name_off, info (vlen bits 0-15, kind bits 24-28, kind_flag bit 31), then size or
// type; kind-specific records follow it at offset 12.
function decodeType(id: number, v: Deno.UnsafePointerView, name: (off: number) => string): BtfType {
  const info = v.getUint32(4);
  const kind = (info >>> 24) & 0x1f;
  const vlen = info & 0xffff;
  const kflag = (info >>> 31) === 1;
  const n = name(v.getUint32(0));
  const sizeOrType = v.getUint32(8);
  const ref = REF_KINDS[kind];
  if (ref) return { id, kind: ref, name: n, type: sizeOrType };
  switch (kind) {
    case BtfKind.INT: {
      const enc = v.getUint32(12);
      return {
        id,
        kind: "int",
        name: n,
        size: sizeOrType,
        signed: ((enc >>> 24) & 1) === 1,
        bits: enc & 0xff,
      };
    }
    case BtfKind.ARRAY: // struct btf_array { type, index_type, nelems }
      return { id, kind: "array", name: n, type: v.getUint32(12), length: v.getUint32(20) };
    case BtfKind.STRUCT:
    case BtfKind.UNION: {
      // struct btf_member { name_off, type, offset }; with kind_flag, offset packs the bitfield size.
      const members = Array.from({ length: vlen }, (_, i) => {
        const at = 12 + i * 12;
        const off = v.getUint32(at + 8);
        return {
          name: name(v.getUint32(at)),
          type: v.getUint32(at + 4),
          bitOffset: kflag ? off & 0xffffff : off,
          bitfieldSize: kflag ? off >>> 24 : 0,
        };
      });
      return { id, kind: kind === BtfKind.STRUCT ? "struct" : "union", name: n, size: sizeOrType, members };
    }
    case BtfKind.ENUM: {
      // struct btf_enum { name_off, val }; kind_flag says the values are signed.
      const values = Array.from({ length: vlen }, (_, i) => ({
        name: name(v.getUint32(12 + i * 8)),
        value: kflag ? v.getInt32(16 + i * 8) : v.getUint32(16 + i * 8),
      }));
      return { id, kind: "enum", name: n, size: sizeOrType, signed: kflag, values };
    }
    case BtfKind.VAR:
      return { id, kind: "var", name: n, type: sizeOrType };
    case BtfKind.DATASEC: {
      // struct btf_var_secinfo { type, offset, size }
      const vars = Array.from({ length: vlen }, (_, i) => ({
        type: v.getUint32(12 + i * 12),
        offset: v.getUint32(16 + i * 12),
        size: v.getUint32(20 + i * 12),
      }));
      return { id, kind: "datasec", name: n, size: sizeOrType, vars };
    }
    default:
      return { id, kind: "other", name: n, btfKind: kind };
  }
}
