// The TypeScript struct layouts must match what clang laid out in the compiled objects. BTF is read
// with bpftool (part of the build toolchain), so no ELF parsing of our own.
import assert from "node:assert/strict";
import { layout } from "../../src/maps/codec.ts";
import {
  ALL_STRUCTS,
  COUNTER_NAMES,
  decodePodConfig,
  encodePodConfig,
  POD_CONFIG,
} from "../../src/maps/layouts.ts";
import { defaultPolicy, podPolicy } from "../../src/mesh/policy.ts";
import { EVENT, EVENT_KINDS, EVENT_REASONS, POD_STATS } from "../../src/monitor/events.ts";
import { MAX_PORT_RANGES } from "../../src/mesh/types.ts";

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

Deno.test("the monitor's event struct, kinds and reasons match the objects' BTF", async () => {
  const types = (await Promise.all(OBJECTS.map(btf))).flat();
  for (const def of [EVENT, POD_STATS]) {
    const c = types.find((x) => x.kind === "STRUCT" && x.name === def.name);
    assert.ok(c, `struct ${def.name} is in no object's BTF`);
    const ts = layout(def);
    assert.equal(ts.size, c.size, `sizeof(struct ${def.name})`);
    assert.deepEqual(
      ts.fields.map((f) => [f.name, f.offset]),
      c.members!.map((m) => [m.name, m.bits_offset / 8]),
    );
  }
  const values = (name: string) =>
    types.find((x) => x.kind === "ENUM" && x.name === name)?.values?.map((v) => [v.name, v.val]);
  assert.deepEqual(values("event_kind"), EVENT_KINDS.map((k, i) => [`EV_${k.toUpperCase()}`, i + 1]));
  assert.deepEqual(values("event_reason"), EVENT_REASONS.map(([r], i) => [`R_${r.toUpperCase()}`, i + 1]));
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
