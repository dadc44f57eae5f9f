// src/generated/bpf_types.ts is what the generator makes of the compiled objects' BTF (the staleness
// check: a C change without `deno task gen` fails here), the BTF reader agrees with bpftool's own
// decoding, and the structs encode as the programs read them.
import assert from "node:assert/strict";
import { Btf, type BtfType } from "../../src/bpf/btf.ts";
import { layout } from "../../src/maps/codec.ts";
import { decodePodConfig, encodePodConfig } from "../../src/maps/layouts.ts";
import { defaultPolicy, podPolicy } from "../../src/mesh/policy.ts";
import { OBJECTS } from "../../src/datapath/catalog.ts";
import {
  C_MAX,
  MAPS,
  MAX_PORT_RANGES,
  POD_CONFIG,
  T_MAX,
  TABLE_NAMES,
} from "../../src/generated/bpf_types.ts";
import { generate, OUTPUT } from "../../scripts/gen_bpf_types.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("src/generated/bpf_types.ts is what `deno task gen` makes of the objects in bpf/build", () => {
  const committed = Deno.readTextFileSync(OUTPUT);
  assert.ok(
    committed === generate(),
    "src/generated/bpf_types.ts is stale: run `deno task gen` (or bash bpf/build.sh) and commit it",
  );
});

Deno.test("the generated constants are the objects' own: array sizes follow the enums", () => {
  // Two facts from different parts of the BTF: a map's __uint(max_entries, C_MAX) and the enum.
  assert.equal(MAPS.counters.maxEntries, C_MAX);
  assert.equal(MAPS.table_fill.maxEntries, T_MAX);
  assert.equal(TABLE_NAMES.length, T_MAX);
  for (const t of TABLE_NAMES) assert.ok(t in MAPS, `table_fill slot ${t} names no map`);
});

interface BpftoolType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  encoding?: string;
  members?: { name: string; type_id: number; bits_offset: number }[];
  values?: { name: string; val: number }[];
  vars?: { type_id: number; offset: number; size: number }[];
}

/** What both decoders report, in one shape. */
function fromReader(t: BtfType): unknown {
  const name = t.name || "(anon)";
  switch (t.kind) {
    case "int":
      return [t.id, "INT", name, t.size, t.signed];
    case "array":
      return [t.id, "ARRAY", name, t.type, t.length];
    case "struct":
    case "union":
      return [
        t.id,
        t.kind.toUpperCase(),
        name,
        t.size,
        t.members.map((m) => [m.name || "(anon)", m.type, m.bitOffset]),
      ];
    case "enum":
      return [t.id, "ENUM", name, t.size, t.values.map((v) => [v.name, v.value])];
    case "datasec":
      return [t.id, "DATASEC", name, t.vars.map((v) => [v.type, v.offset, v.size])];
    case "other":
      return [t.id, "other", name];
    default:
      return [t.id, t.kind.toUpperCase(), name, t.type];
  }
}

function fromBpftool(t: BpftoolType): unknown {
  switch (t.kind) {
    case "INT":
      return [t.id, t.kind, t.name, t.size, t.encoding === "SIGNED"];
    case "ARRAY":
      return [t.id, t.kind, t.name, t.type_id, t.nr_elems];
    case "STRUCT":
    case "UNION":
      return [t.id, t.kind, t.name, t.size, t.members!.map((m) => [m.name, m.type_id, m.bits_offset])];
    case "ENUM":
      return [t.id, t.kind, t.name, t.size, t.values!.map((v) => [v.name, v.val])];
    case "DATASEC":
      return [t.id, t.kind, t.name, t.vars!.map((v) => [v.type_id, v.offset, v.size])];
    case "PTR":
    case "TYPEDEF":
    case "VOLATILE":
    case "CONST":
    case "RESTRICT":
    case "TYPE_TAG":
    case "VAR":
      return [t.id, t.kind, t.name, t.type_id];
    default:
      return [t.id, "other", t.name];
  }
}

Deno.test("the BTF reader decodes every type as bpftool does", async (t) => {
  for (const obj of OBJECTS) {
    await t.step(obj, async () => {
      const path = `${ROOT}bpf/build/${obj}.bpf.o`;
      const out = await new Deno.Command("bpftool", { args: ["-j", "btf", "dump", "file", path] }).output();
      assert.equal(out.code, 0, `bpftool btf dump ${obj}: ${new TextDecoder().decode(out.stderr)}`);
      const theirs = (JSON.parse(new TextDecoder().decode(out.stdout)).types as BpftoolType[]).map(
        fromBpftool,
      );
      const ours = [...Btf.parse(path).types.values()].map(fromReader);
      assert.ok(ours.length > 100, `${obj}: only ${ours.length} types`);
      assert.deepEqual(ours, theirs);
    });
  }
});

Deno.test("a struct whose fields do not add up to its C size is refused", () => {
  assert.throws(() => layout({ name: "x", size: 6, fields: [["a", "u32"]] }), /4/);
  assert.equal(layout(POD_CONFIG).size, POD_CONFIG.size);
});

Deno.test("pod_config port ranges: encoded as lo/hi pairs and decoded back", async (t) => {
  await t.step("round trip", () => {
    const { policy } = podPolicy({
      "config.linkerd.io/skip-outbound-ports": "25, 8000-9000, 9001, 65535",
      "config.linkerd.io/skip-inbound-ports": "1-1024",
    }, "linkerd");
    assert.deepEqual(policy.excludeOutboundPorts.ranges, [
      { from: 25, to: 25 },
      { from: 8000, to: 9001 },
      { from: 65535, to: 65535 },
    ]);
    assert.deepEqual(decodePodConfig(encodePodConfig(policy)), policy);
  });

  await t.step("bytes: the count is of ranges, each range is lo then hi", () => {
    const { policy } = podPolicy({ "config.linkerd.io/skip-outbound-ports": "8000-9000, 22" }, "linkerd");
    const b = encodePodConfig(policy);
    const l = layout(POD_CONFIG);
    const at = (name: string) => l.fields.find((f) => f.name === name)!.offset;
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    assert.equal(b.byteLength, l.size);
    assert.equal(v.getUint8(at("n_exclude_out_ports")), 2);
    const arr = at("exclude_out_ports");
    assert.deepEqual([0, 2, 4, 6].map((o) => v.getUint16(arr + o, true)), [22, 22, 8000, 9000]);
  });

  await t.step("lists the map cannot hold are refused, never cut", () => {
    const p = defaultPolicy("istio");
    p.excludeOutboundPorts.ranges = Array.from(
      { length: MAX_PORT_RANGES + 1 },
      (_, i) => ({ from: 1000 + 2 * i, to: 1000 + 2 * i }),
    );
    assert.throws(() => encodePodConfig(p), /exceed/);
    p.excludeOutboundPorts.ranges = [{ from: 9000, to: 8000 }];
    assert.throws(() => encodePodConfig(p), /inverted/);
  });
});
