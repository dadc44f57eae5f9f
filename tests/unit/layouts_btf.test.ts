// The TypeScript struct layouts must match what clang laid out in the compiled objects. BTF is read
// with bpftool (part of the build toolchain), so no ELF parsing of our own.
import assert from "node:assert/strict";
import { layout } from "../../src/maps/codec.ts";
import { ALL_STRUCTS, COUNTER_NAMES } from "../../src/maps/layouts.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const OBJECTS = ["connect", "dns", "sockops", "redirect", "origdst", "ingress"];

interface BtfMember {
  name: string;
  bits_offset: number;
}
interface BtfType {
  kind: string;
  name: string;
  size?: number;
  members?: BtfMember[];
  values?: { name: string; val: number }[];
}

async function btf(obj: string): Promise<BtfType[]> {
  const out = await new Deno.Command("bpftool", {
    args: ["-j", "btf", "dump", "file", `${ROOT}bpf/build/${obj}.bpf.o`],
  }).output();
  assert.equal(out.code, 0, `bpftool btf dump ${obj}: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)).types;
}

Deno.test("struct layouts match the BTF of every compiled object", async (t) => {
  for (const obj of OBJECTS) {
    const types = await btf(obj);
    await t.step(obj, () => {
      for (const def of ALL_STRUCTS) {
        const c = types.find((x) => x.kind === "STRUCT" && x.name === def.name);
        if (!c) continue; // an object that never touches the struct need not carry it
        const ts = layout(def);
        assert.equal(ts.size, c.size, `${obj}: sizeof(struct ${def.name})`);
        assert.deepEqual(
          ts.fields.map((f) => [f.name, f.offset]),
          c.members!.map((m) => [m.name, m.bits_offset / 8]),
          `${obj}: fields and offsets of struct ${def.name}`,
        );
      }
    });
  }
  // Every struct must be checked against at least one object, or the test proves nothing for it.
  const seen = new Set<string>();
  for (const obj of OBJECTS) {
    for (const x of await btf(obj)) if (x.kind === "STRUCT") seen.add(x.name);
  }
  for (const def of ALL_STRUCTS) assert.ok(seen.has(def.name), `struct ${def.name} is in no object's BTF`);
});

Deno.test("counter names follow enum counter in bpf/common.h", async () => {
  // The enum is not in the objects' BTF (the counters map is keyed by a plain __u32, as the kernel
  // requires of array maps), so the header is the reference.
  const header = await Deno.readTextFile(`${ROOT}bpf/common.h`);
  const body = /enum counter \{([^}]*)\}/.exec(header)?.[1];
  assert.ok(body, "enum counter not found in bpf/common.h");
  const names = [...body.matchAll(/^\s*(C_[A-Z_]+)/gm)].map((m) => m[1]);
  const expected = COUNTER_NAMES.map((n) => `C_${n.toUpperCase()}`);
  assert.deepEqual(names, [...expected, "C_MAX"]);
});
