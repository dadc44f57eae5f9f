// What the loader can do without privileges: parse objects, report errors, route libbpf's output,
// refuse unsafe pin paths. Needs the fixtures from `bash bpf/build.sh`.
import assert from "node:assert/strict";
import { captureLogs } from "../../src/log/logger.ts";
import { BpfError } from "../../src/ffi/errors.ts";
import { collectLibbpfMessages, type LibbpfMessage } from "../../src/ffi/libbpf_log.ts";
import { BpfNotFoundError, BpfObject } from "../../src/bpf/object.ts";
import { perCpuStride } from "../../src/bpf/map_fd.ts";
import { BpffsError, ensureBpffsDir, isPinned, removePinTree } from "../../src/bpf/pins.ts";
import { attachTypeName, MapType, mapTypeName, ProgType, progTypeName } from "../../src/bpf/types.ts";
import { thrown } from "./helpers.ts";

const FIXTURE = new URL("../../bpf/build/test/loader_test.bpf.o", import.meta.url).pathname;

Deno.test("BpfObject.open parses an object without loading it", async (t) => {
  using obj = BpfObject.open(FIXTURE);

  await t.step("programs carry name, section and type", () => {
    const progs = obj.programs().map((p) => [p.name, p.sectionName, p.typeName]);
    assert.deepEqual(progs, [
      ["rewrite_port", "cgroup/connect4", "cgroup_sock_addr"],
      ["pass_xdp", "xdp", "xdp"],
      ["pass_xdp_alt", "xdp", "xdp"],
      ["pass_tc", "tc", "sched_cls"],
    ]);
    assert.equal(obj.program("pass_tc").type, ProgType.SCHED_CLS);
  });

  await t.step("maps carry their declared shape; the .rodata map is flagged internal", () => {
    const maps = obj.maps().filter((m) => !m.internal).map((m) => [
      m.name,
      mapTypeName(m.type),
      m.keySize,
      m.valueSize,
      m.maxEntries,
    ]);
    assert.deepEqual(maps, [
      ["port_rewrites", "hash", 2, 2, 64],
      ["stats", "array", 4, 8, 4],
      ["cpu_hits", "percpu_array", 4, 4, 1],
    ]);
    const internal = obj.maps().filter((m) => m.internal);
    assert.equal(internal.length, 1);
    assert.match(internal[0]?.name ?? "", /\.rodata$/);
    assert.equal(obj.map("port_rewrites").pinPath, undefined);
    assert.ok(obj.map("cpu_hits").isPerCpu);
    assert.ok(!obj.map("stats").isPerCpu);
  });

  await t.step("unknown names fail with the list of what exists", () => {
    const err = thrown(() => obj.program("rewrite"));
    assert.ok(err instanceof BpfNotFoundError);
    assert.deepEqual(err.available, ["rewrite_port", "pass_xdp", "pass_xdp_alt", "pass_tc"]);
    assert.match(err.message, /has no program named "rewrite"; its programs: rewrite_port, pass_xdp/);
    const mapErr = thrown(() => obj.map("nope"));
    assert.ok(mapErr instanceof BpfNotFoundError);
    assert.match(mapErr.message, /its maps: port_rewrites, stats, cpu_hits/);
  });

  await t.step("fds are refused before load, with the reason", () => {
    assert.throws(() => obj.program("pass_xdp").fd, /pass_xdp: .* is not loaded/);
    assert.throws(() => obj.map("stats").fd, /stats: .* is not loaded/);
  });

  await t.step("a closed object refuses further use", () => {
    const other = BpfObject.open(FIXTURE);
    const prog = other.program("pass_xdp");
    const map = other.map("stats");
    other.close();
    other.close();
    assert.ok(other.closed);
    assert.throws(() => other.programs(), /is closed/);
    assert.throws(() => prog.fd, /is closed/);
    assert.throws(() => map.keySize, /is closed/);
  });

  await t.step("pinMapsDir outside bpffs is refused before anything is created", () => {
    const dir = Deno.makeTempDirSync();
    try {
      const err = thrown(() => BpfObject.open(FIXTURE, { pinMapsDir: `${dir}/maps` }));
      assert.ok(err instanceof BpffsError);
      assert.match(err.message, /is not on a bpf filesystem/);
      assert.ok(!isPinned(`${dir}/maps`));
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
});

Deno.test("open failures are typed and carry libbpf's explanation", () => {
  const err = thrown(() => BpfObject.open("/nonexistent/object.bpf.o"));
  assert.ok(err instanceof BpfError);
  assert.equal(err.code, "ENOENT");
  assert.equal(err.op, "bpf_object__open_file(/nonexistent/object.bpf.o)");
  assert.match(err.log ?? "", /failed to open \/nonexistent\/object\.bpf\.o/);

  const notElf = thrown(() => BpfObject.open("/proc/self/status"));
  assert.ok(notElf instanceof BpfError);
  assert.notEqual(notElf.errno, 0);
});

Deno.test("libbpf's messages are rendered from their printf format and logged by level", async (t) => {
  using capture = captureLogs(["libbpf"], "debug");
  const records = capture.records;
  {
    await t.step("arguments are substituted, and warnings reach the logger at warning level", () => {
      assert.throws(() => BpfObject.open("/nonexistent/a.bpf.o"), BpfError);
      const warnings = records.filter((r) => r.level === "warning").map((r) => String(r.properties.message));
      assert.ok(
        warnings.some((w) => w.includes("failed to open /nonexistent/a.bpf.o: No such file or directory")),
        `warnings: ${JSON.stringify(warnings)}`,
      );
      assert.ok(records.some((r) => r.level === "debug"), "libbpf's debug output is logged at debug");
    });

    await t.step("a message longer than the first buffer is rendered whole", () => {
      const longPath = `/nonexistent/${"x".repeat(6000)}.o`;
      const messages: LibbpfMessage[] = [];
      collectLibbpfMessages(messages, () => assert.throws(() => BpfObject.open(longPath), BpfError));
      const warning = messages.find((m) => m.level === "warning");
      assert.ok(warning, "a warning was collected");
      assert.ok(warning.text.includes(longPath), "the whole path is in the message");
      assert.ok(warning.text.endsWith("File name too long"), warning.text.slice(-60));
    });

    await t.step("collection stops when the function returns", () => {
      const messages: LibbpfMessage[] = [];
      collectLibbpfMessages(messages, () => 0);
      assert.throws(() => BpfObject.open("/nonexistent/b.bpf.o"), BpfError);
      assert.deepEqual(messages, []);
    });
  }
});

Deno.test("pin directory helpers refuse paths outside bpffs", async (t) => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/keep`, "x");
    await t.step("ensureBpffsDir names the filesystem it found instead", () => {
      const err = thrown(() => ensureBpffsDir(`${dir}/a/b`));
      assert.ok(err instanceof BpffsError);
      assert.match(
        err.message,
        new RegExp(`${dir}/a/b is not on a bpf filesystem \\(${dir} has filesystem magic 0x`),
      );
      assert.throws(() => ensureBpffsDir("relative/dir"), /must be absolute/);
    });
    await t.step("removePinTree leaves a non-bpffs directory untouched", () => {
      assert.throws(() => removePinTree(dir), /refusing to remove .*: it is not on a bpf filesystem/);
      assert.equal(Deno.readTextFileSync(`${dir}/keep`), "x");
    });
    await t.step("a missing tree is nothing to remove", () => {
      assert.equal(removePinTree(`${dir}/missing`), 0);
      assert.equal(isPinned(`${dir}/missing`), false);
      assert.equal(isPinned(`${dir}/keep`), true);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("kind names and per-CPU strides", () => {
  assert.equal(progTypeName(ProgType.CGROUP_SOCK_ADDR), "cgroup_sock_addr");
  assert.equal(progTypeName(6), "xdp");
  assert.equal(mapTypeName(MapType.SOCKHASH), "sockhash");
  assert.equal(attachTypeName(10), "cgroup_inet4_connect");
  assert.equal(mapTypeName(9999), "unknown(9999)");
  assert.deepEqual([1, 4, 8, 9, 16].map(perCpuStride), [8, 8, 8, 16, 16]);
});
