import assert from "node:assert/strict";
import { connTableSizeFor, nodeMemoryBytes } from "../../src/datapath/sizing.ts";
import { connAdmitLimit } from "../../src/datapath/datapath.ts";
import { daemonConfig } from "../../src/cli/commands/daemon.ts";
import { parseFlags, UsageError } from "../../src/cli/args.ts";
import { DAEMON_FLAGS } from "../../src/cli/options.ts";

Deno.test("connection tables follow the node's memory, as a power of two within bounds", () => {
  const GiB = 1024 ** 3;
  assert.equal(connTableSizeFor(1 * GiB), 65536, "small nodes get the floor");
  assert.equal(connTableSizeFor(24 * GiB), 524288);
  assert.equal(connTableSizeFor(32 * GiB), 1 << 20);
  assert.equal(connTableSizeFor(512 * GiB), 1 << 20, "and large ones the ceiling");
  for (const g of [3, 7, 24, 100]) {
    const n = connTableSizeFor(g * GiB);
    assert.equal(n & (n - 1), 0, `${g} GiB: ${n} is a power of two`);
  }
});

Deno.test("MemTotal is read from /proc/meminfo, and a file without it is an error", () => {
  assert.equal(nodeMemoryBytes("MemFree:  10 kB\nMemTotal:       24563712 kB\n"), 24563712 * 1024);
  assert.throws(() => nodeMemoryBytes("MemFree: 1 kB\n"), /MemTotal/);
  assert.ok(nodeMemoryBytes() > 0);
});

Deno.test("new connections are refused below capacity, leaving room for those in flight", () => {
  assert.equal(connAdmitLimit(65536), 65536 - 1024);
  assert.equal(connAdmitLimit(1024), 1024 - 256);
  assert.ok(connAdmitLimit(1 << 20) < 1 << 20);
});

Deno.test("--conn-table-size: 0 sizes from memory, a small or bad value is a usage error naming the flag", () => {
  const cfg = (args: string[]) => daemonConfig(parseFlags(DAEMON_FLAGS, args));
  assert.equal(cfg([]).connTableSize, connTableSizeFor(nodeMemoryBytes()));
  assert.equal(cfg(["--conn-table-size=200000"]).connTableSize, 200000);
  assert.throws(
    () => cfg(["--conn-table-size=100"]),
    (e) => e instanceof UsageError && /--conn-table-size/.test(e.message),
  );
  assert.throws(
    () => cfg(["--conn-table-size=lots"]),
    (e) => e instanceof UsageError && /--conn-table-size/.test(e.message),
  );
  assert.throws(
    () => cfg(["--syn-table-size=10"]),
    (e) => e instanceof UsageError && /--syn-table-size/.test(e.message),
  );
});
