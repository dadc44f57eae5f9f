// Writes src/generated/bpf_types.ts from the BTF of the datapath's compiled objects: the layout of
// every struct a map holds or struct agent_types names (bpf/common.h), the enums struct agent_types
// names, and every map of the .maps section. Run by bpf/build.sh after the objects are built:
//   deno task gen            rewrite the file if it differs
//   deno task gen --check    fail if it differs (CI: the committed file must match the objects)
import { Btf, type BtfType } from "../src/bpf/btf.ts";
import { mapTypeName } from "../src/bpf/types.ts";
import { OBJECTS } from "../src/datapath/catalog.ts";
import { type FieldType, layout, type StructDef } from "../src/maps/codec.ts";

const ROOT = new URL("../", import.meta.url).pathname;
export const OUTPUT = `${ROOT}src/generated/bpf_types.ts`;
const COMMAND = "deno task gen";

/** Enums whose enumerators also get a list of names, for code that walks them (counters, tables, events). */
const NAMED_ENUMS = ["counter", "table", "event_kind", "event_reason"];

/** A struct field as the codec describes it; structs by their tag. */
type Field = { scalar: string } | { array: Field; length: number } | { struct: string };

interface Struct {
  name: string;
  size: number;
  fields: { name: string; offset: number; type: Field }[];
}

interface Enum {
  name: string;
  values: { name: string; value: number }[];
}

interface MapDef {
  name: string;
  type: string;
  key: string;
  value: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

interface Model {
  structs: Struct[];
  enums: Enum[];
  maps: MapDef[];
}

class ObjectReader {
  readonly structs = new Map<string, Struct>();
  constructor(readonly btf: Btf, readonly what: string) {}

  fail(msg: string): never {
    throw new Error(`${this.what}: ${msg}`);
  }

  /** sizeof the type `id` names. */
  sizeOf(id: number): number {
    if (id === 0) return 0;
    const t = this.btf.resolve(id);
    switch (t.kind) {
      case "int":
      case "struct":
      case "union":
      case "enum":
        return t.size;
      case "ptr":
        return 8;
      case "array":
        return t.length * this.sizeOf(t.type);
      default:
        return this.fail(`no size for BTF type ${id} (${t.kind})`);
    }
  }

  /** The C spelling of a type, for comments. */
  cName(id: number): string {
    if (id === 0) return "void";
    const t = this.btf.get(id);
    if (t.kind === "struct" || t.kind === "union" || t.kind === "enum") return `${t.kind} ${t.name}`;
    if (t.name) return t.name;
    if (t.kind === "array") return `${this.cName(t.type)}[${t.length}]`;
    return this.cName(this.btf.resolve(id).id);
  }

  field(id: number, where: string): Field {
    let t: BtfType = this.btf.get(id);
    // __be32 is how the headers mark an IPv4 address (network order); addr16 is an address of
    // either family. Both get the codec's address types, which read and write text.
    while (t.kind === "typedef" || t.kind === "const" || t.kind === "volatile") {
      if (t.kind === "typedef" && t.name === "__be32") return { scalar: "ip4" };
      t = this.btf.get(t.type);
    }
    switch (t.kind) {
      case "int":
        if (t.signed) this.fail(`${where}: signed integers have no codec type`);
        if (![1, 2, 4, 8].includes(t.size)) this.fail(`${where}: a ${t.size}-byte integer`);
        return { scalar: `u${t.size * 8}` };
      case "enum":
        return { scalar: `u${t.size * 8}` };
      case "array":
        return { array: this.field(t.type, where), length: t.length };
      case "struct":
        if (t.name === "addr16") return { scalar: "ip6" };
        this.struct(t.id);
        return { struct: t.name };
      default:
        return this.fail(`${where}: no codec type for BTF kind ${t.kind}`);
    }
  }

  struct(id: number): Struct {
    const t = this.btf.resolve(id);
    if (t.kind !== "struct" || !t.name) return this.fail(`BTF type ${id} is not a named struct`);
    const known = this.structs.get(t.name);
    if (known) return known;
    const fields = t.members.map((m) => {
      if (m.bitfieldSize || m.bitOffset % 8) this.fail(`struct ${t.name}.${m.name} is a bitfield`);
      return {
        name: m.name,
        offset: m.bitOffset / 8,
        type: this.field(m.type, `struct ${t.name}.${m.name}`),
      };
    });
    const s = { name: t.name, size: t.size, fields };
    this.structs.set(t.name, s);
    return s;
  }

  /** A map definition's `__uint(x, N)`: a pointer to an array of N. */
  uint(id: number): number {
    const p = this.btf.get(id);
    const a = p.kind === "ptr" ? this.btf.get(p.type) : undefined;
    if (a?.kind !== "array") return this.fail(`BTF type ${id} is not an __uint() member`);
    return a.length;
  }

  maps(): MapDef[] {
    const sec = this.btf.find("datasec", ".maps");
    if (!sec) return this.fail("no .maps section");
    // Clang lists them in the order the code first uses them, which differs between objects.
    const name = (v: { type: number }) => this.btf.get(v.type).name;
    const vars = [...sec.vars].sort((a, b) => name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0);
    return vars.map((v) => {
      const variable = this.btf.get(v.type);
      const def = variable.kind === "var" ? this.btf.resolve(variable.type) : undefined;
      if (def?.kind !== "struct") return this.fail(`.maps variable ${v.type} is not a map definition`);
      const m: MapDef = {
        name: variable.name,
        type: "",
        key: "",
        value: "",
        keySize: 0,
        valueSize: 0,
        maxEntries: 0,
        flags: 0,
      };
      for (const member of def.members) {
        const pointee = () => {
          const p = this.btf.get(member.type);
          return p.kind === "ptr" ? p.type : this.fail(`map ${m.name}: ${member.name} is not a pointer`);
        };
        switch (member.name) {
          case "type":
            m.type = mapTypeName(this.uint(member.type));
            break;
          case "max_entries":
            m.maxEntries = this.uint(member.type);
            break;
          case "map_flags":
            m.flags = this.uint(member.type);
            break;
          case "key":
          case "value": {
            const id = pointee();
            const t = this.btf.resolve(id);
            if (t.kind === "struct" && t.name !== "addr16") this.struct(t.id);
            m[member.name] = this.cName(id);
            m[member.name === "key" ? "keySize" : "valueSize"] = this.sizeOf(id);
            break;
          }
          default:
            this.fail(`map ${m.name}: no generator support for __type/__uint(${member.name})`);
        }
      }
      return m;
    });
  }

  model(): Model {
    const maps = this.maps();
    const anchor = this.btf.find("struct", "agent_types");
    if (!anchor) return this.fail("no struct agent_types (bpf/common.h)");
    const enums: Enum[] = [];
    for (const m of anchor.members) {
      const t = this.btf.resolve(m.type);
      if (t.kind === "enum") enums.push({ name: t.name, values: t.values });
      else if (t.kind === "struct") this.struct(t.id);
      else this.fail(`struct agent_types.${m.name} is neither an enum nor a struct`);
    }
    return { structs: [...this.structs.values()], enums, maps };
  }
}

/** The model every object agrees on; differing declarations of one name fail. */
function merge(models: [string, Model][]): Model {
  const [first, base] = models[0]!;
  const structs = new Map(base.structs.map((s) => [s.name, s]));
  for (const [obj, m] of models.slice(1)) {
    const differs = (what: string, a: unknown, b: unknown) => {
      if (JSON.stringify(a) !== JSON.stringify(b)) {
        throw new Error(`${what} differs between ${first} and ${obj}: rebuild with bash bpf/build.sh`);
      }
    };
    differs("the map list", base.maps, m.maps);
    differs("the enums", base.enums, m.enums);
    for (const s of m.structs) {
      const known = structs.get(s.name);
      if (known) differs(`struct ${s.name}`, known, s);
      else structs.set(s.name, s);
    }
  }
  return { structs: [...structs.values()], enums: base.enums, maps: base.maps };
}

export function readModel(objectsDir: string): Model {
  return merge(OBJECTS.map((o) => {
    const path = `${objectsDir}/${o}.bpf.o`;
    return [`${o}.bpf.o`, new ObjectReader(Btf.parse(path), path).model()];
  }));
}

const constName = (s: string) => s.toUpperCase();

function fieldText(f: Field): string {
  if ("scalar" in f) return JSON.stringify(f.scalar);
  if ("struct" in f) return constName(f.struct);
  return `{ array: ${fieldText(f.array)}, length: ${f.length} }`;
}

function fieldDef(f: Field, defs: Map<string, StructDef>): FieldType {
  if ("scalar" in f) return f.scalar as FieldType;
  if ("struct" in f) return defs.get(f.struct)!;
  return { array: fieldDef(f.array, defs), length: f.length };
}

/** Structs in an order where each comes after the structs it holds. */
function ordered(structs: Struct[]): Struct[] {
  const byName = new Map(structs.map((s) => [s.name, s]));
  const out: Struct[] = [];
  const visit = (s: Struct) => {
    if (out.includes(s)) return;
    const deps = (f: Field): string[] => "struct" in f ? [f.struct] : "array" in f ? deps(f.array) : [];
    for (const f of s.fields) for (const d of deps(f.type)) visit(byName.get(d)!);
    out.push(s);
  };
  for (const s of structs) visit(s);
  return out;
}

/** Checks that the codec lays each struct out exactly as clang did, so its encoders can be trusted. */
function checkLayouts(structs: Struct[]): void {
  const defs = new Map<string, StructDef>();
  for (const s of structs) {
    const def: StructDef = {
      name: s.name,
      fields: s.fields.map((f) => [f.name, fieldDef(f.type, defs)] as const),
    };
    defs.set(s.name, def);
    const l = layout(def);
    const got = JSON.stringify([l.size, l.fields.map((f) => f.offset)]);
    const want = JSON.stringify([s.size, s.fields.map((f) => f.offset)]);
    if (got !== want) {
      throw new Error(`struct ${s.name}: clang laid it out as ${want} (size, offsets), the codec as ${got}`);
    }
  }
}

function enumNames(e: Enum): string[] {
  const first = e.values[0]?.name ?? "";
  const prefix = first.slice(0, first.indexOf("_") + 1);
  if (!prefix || e.values.some((v) => !v.name.startsWith(prefix))) {
    throw new Error(`enum ${e.name}: its enumerators share no prefix`);
  }
  let values = e.values;
  if (values.at(-1)?.name === `${prefix}MAX`) values = values.slice(0, -1);
  values.forEach((v, i) => {
    if (v.value !== values[0]!.value + i) throw new Error(`enum ${e.name}: ${v.name} breaks the sequence`);
  });
  return values.map((v) => v.name.slice(prefix.length).toLowerCase());
}

export function render(model: Model): string {
  const structs = ordered(model.structs);
  checkLayouts(structs);
  const out: string[] = [
    `// Generated by \`${COMMAND}\` (scripts/gen_bpf_types.ts) from the BTF of the datapath's objects in`,
    "// bpf/build/, which bash bpf/build.sh rebuilds and regenerates this from: do not edit. The C side is",
    "// bpf/common.h and bpf/maps.h.",
    'import type { StructDef } from "../maps/codec.ts";',
    "",
  ];
  for (const s of structs) {
    out.push(
      `/** struct ${s.name}: ${s.size} bytes. */`,
      `export const ${constName(s.name)} = {`,
      `  name: ${JSON.stringify(s.name)},`,
      `  size: ${s.size},`,
      "  fields: [",
      ...s.fields.map((f) => `    [${JSON.stringify(f.name)}, ${fieldText(f.type)}], // offset ${f.offset}`),
      "  ],",
      "} as const satisfies StructDef;",
      "",
    );
  }
  for (const e of model.enums) {
    out.push(`// enum ${e.name}`);
    // Addresses and masks read better in hex; ports, counts and indexes in decimal.
    const text = (n: number) => n > 0xffff ? `0x${n.toString(16)}` : String(n);
    for (const v of e.values) out.push(`export const ${v.name} = ${text(v.value)};`);
    if (NAMED_ENUMS.includes(e.name)) {
      const first = e.values[0]!.name;
      out.push(
        `/** enum ${e.name}: entry i names value ${first} + i (its enumerator without the prefix, in lower case). */`,
        `export const ${constName(e.name)}_NAMES = [`,
        ...enumNames(e).map((n) => `  ${JSON.stringify(n)},`),
        "] as const;",
      );
    }
    out.push("");
  }
  out.push("/** Every map of the objects' .maps section (bpf/maps.h), by name. */");
  out.push("export const MAPS = {");
  for (const m of model.maps) {
    out.push(
      `  ${m.name}: {`,
      `    type: ${JSON.stringify(m.type)},`,
      `    key: ${JSON.stringify(m.key)},`,
      `    value: ${JSON.stringify(m.value)},`,
      `    keySize: ${m.keySize},`,
      `    valueSize: ${m.valueSize},`,
      `    maxEntries: ${m.maxEntries},`,
      `    flags: ${m.flags},`,
      "  },",
    );
  }
  out.push("} as const;", "export type MapName = keyof typeof MAPS;", "");
  return out.join("\n");
}

export function generate(objectsDir = `${ROOT}bpf/build`): string {
  return render(readModel(objectsDir));
}

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const text = generate();
  let current = "";
  try {
    current = Deno.readTextFileSync(OUTPUT);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const rel = OUTPUT.slice(ROOT.length);
  if (current === text) {
    // Up to date: left untouched, so its timestamp keeps meaning something.
  } else if (check) {
    console.error(
      `${rel} does not match the objects' BTF: run \`${COMMAND}\` (or bash bpf/build.sh) and commit it`,
    );
    Deno.exit(1);
  } else {
    Deno.mkdirSync(`${ROOT}src/generated`, { recursive: true });
    Deno.writeTextFileSync(OUTPUT, text);
    console.error(`gen: wrote ${rel}`);
  }
}
