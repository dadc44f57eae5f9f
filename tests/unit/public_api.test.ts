// The library surface (mod.ts, deno.json "exports"): exactly the names below, and nothing of the agent
// behind them. A name that appears or goes makes this test fail, so the surface changes on purpose.
import assert from "node:assert/strict";
import * as lib from "../../mod.ts";
import { CodecError, decode, encode, layout, type StructDef } from "../../mod.ts";

const ROOT = new URL("../../", import.meta.url);

const EXPECTED = [
  "AttachType",
  "BPF_ANY",
  "BPF_EXIST",
  "BPF_NOEXIST",
  "BpfError",
  "BpfLink",
  "BpfMap",
  "BpfNotFoundError",
  "BpfObject",
  "BpfProgram",
  "BpffsError",
  "CodecError",
  "Errno",
  "LibcError",
  "LibraryLoadError",
  "MapFd",
  "MapType",
  "PinMismatchError",
  "PinnedMap",
  "PinnedProgram",
  "ProgType",
  "RingBuffer",
  "VERSION",
  "attachCgroup",
  "attachSkMsg",
  "attachXdp",
  "decode",
  "detachSkMsg",
  "encode",
  "errnoName",
  "hasErrno",
  "isPinned",
  "layout",
  "mapInfoByFd",
  "numPossibleCpus",
  "openPinnedMap",
  "pinFd",
  "pinProgram",
  "progInfo",
  "removePinTree",
  "tcAttach",
  "tcDetach",
  "tcQuery",
];

Deno.test("mod.ts exports exactly the library's names", () => {
  assert.deepEqual(Object.keys(lib).sort(), [...EXPECTED].sort());
});

Deno.test("deno.json exports mod.ts as the package root", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.deepEqual(cfg.exports, { ".": "./mod.ts" });
});

Deno.test("the library reaches none of the agent's modules", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "mod.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.equal(out.code, 0);
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: { specifier: string }[] };
  const local = graph.modules.map((m) => m.specifier).filter((s) => s.startsWith(ROOT.href))
    .map((s) => s.slice(ROOT.href.length));
  assert.ok(local.includes("src/bpf/object.ts") && local.includes("src/maps/codec.ts"), local.join(" "));
  // The loader, the codec, the native layer and its logger (with its level and line helpers), the
  // dependency-free byte helpers, and the address text helpers the codec's "ip4"/"ip6" fields use
  // (with the Cidr type they name).
  const allowed = new RegExp(
    "^(mod|src/version|src/bpf/[^/]+|src/ffi/[^/]+|src/maps/codec|src/util/bytes|src/log/(logger|lines)|src/mesh/ipv[46]|src/mesh/types)\\.ts$",
  );
  assert.deepEqual(local.filter((s) => !allowed.test(s)), []);
});

Deno.test("the codec through the public surface", () => {
  const def: StructDef = { name: "pair", fields: [["ip", "ip4"], ["port", "u16"], ["n", "u64"]] };
  assert.equal(layout(def).size, 16);
  const bytes = encode(def, { ip: "10.1.2.3", port: 15001, n: 7n });
  assert.deepEqual([...bytes.subarray(0, 6)], [10, 1, 2, 3, 0x99, 0x3a]);
  assert.deepEqual(decode(def, bytes), { ip: "10.1.2.3", port: 15001, n: 7n });
  assert.throws(() => encode(def, { ip: "10.1.2", port: 1, n: 0n }), CodecError);
});
