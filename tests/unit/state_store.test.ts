// The attachment state file: validated on read, a damaged file falls back to the previous good
// copy, and only when both are unusable is the state "invalid" (rebuild, never drop).
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type AttachmentRecord,
  previousFile,
  readAttachmentState,
  removeAttachmentState,
  validateRecords,
  writeAttachmentState,
} from "../../src/daemon/state_store.ts";

const rec = (id: string, ip: string, mark: number): AttachmentRecord => ({
  containerId: id,
  ifName: "eth0",
  netns: `/run/netns/${id}`,
  podNamespace: "default",
  podName: id,
  podIp: ip,
  mark,
  hook: "xdp",
  txChanged: true,
  createdAt: "2026-12-01T00:00:00.000Z",
  pinKey: `${id}@${ip}`,
});

Deno.test("state store", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-state-" });
  const file = join(dir, "state", "attachments.json");
  try {
    await t.step("absent until written; a write is read back exactly", () => {
      assert.deepEqual(readAttachmentState(file), { kind: "absent" });
      writeAttachmentState(file, [rec("a", "10.0.0.1", 7)]);
      assert.deepEqual(readAttachmentState(file), {
        kind: "ok",
        records: [rec("a", "10.0.0.1", 7)],
        from: "current",
      });
      assert.equal(Deno.statSync(file).mode! & 0o777, 0o600);
    });

    await t.step("the replaced good file is kept as the previous copy", () => {
      writeAttachmentState(file, [rec("a", "10.0.0.1", 7), rec("b", "10.0.0.2", 8)]);
      const prev = validateRecords(JSON.parse(Deno.readTextFileSync(previousFile(file))));
      assert.deepEqual(prev.map((r) => r.containerId), ["a"]);
    });

    await t.step("a torn file falls back to the previous copy, naming the problem", () => {
      const text = Deno.readTextFileSync(file);
      Deno.writeTextFileSync(file, text.slice(0, text.length / 2));
      const r = readAttachmentState(file);
      assert.equal(r.kind, "ok");
      if (r.kind !== "ok") return;
      assert.equal(r.from, "previous");
      assert.deepEqual(r.records.map((x) => x.containerId), ["a"]);
      assert.match(r.problem ?? "", /attachments\.json/);
      // Writing over a damaged file does not make the damage the previous copy.
      writeAttachmentState(file, [rec("c", "10.0.0.3", 9)]);
      assert.deepEqual(
        validateRecords(JSON.parse(Deno.readTextFileSync(previousFile(file)))).map((x) => x.containerId),
        ["a"],
      );
    });

    await t.step("both unusable: invalid, never an empty list", () => {
      Deno.writeTextFileSync(file, '[{"containerId": 1}]');
      Deno.writeTextFileSync(previousFile(file), "");
      const r = readAttachmentState(file);
      assert.equal(r.kind, "invalid");
      assert.match((r as { problem: string }).problem, /containerId/);
    });

    await t.step("validation names what is wrong", () => {
      const bad: [unknown, RegExp][] = [
        [{}, /not a list/],
        [[{ ...rec("a", "10.0.0.1", 7), mark: 0 }], /mark/],
        [[{ ...rec("a", "10.0.0.1", 7), podIp: "fe80::1" }], /IPv4/],
        [[{ ...rec("a", "10.0.0.1", 7), hook: "x" }], /hook/],
        [[{ ...rec("a", "10.0.0.1", 7), txChanged: "yes" }], /txChanged/],
        [[rec("a", "10.0.0.1", 7), rec("a", "10.0.0.2", 8)], /twice/],
        [[{ ...rec("a", "10.0.0.1", 7), netnsCookie: "x1" }], /netnsCookie/],
      ];
      for (const [v, re] of bad) assert.throws(() => validateRecords(v), re);
    });

    await t.step("remove takes the file and its copies", () => {
      writeAttachmentState(file, []);
      writeAttachmentState(file, []);
      removeAttachmentState(file);
      assert.deepEqual(readAttachmentState(file), { kind: "absent" });
      assert.deepEqual([...Deno.readDirSync(join(dir, "state"))], []);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
