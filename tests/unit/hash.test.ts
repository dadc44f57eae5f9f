import assert from "node:assert/strict";
import { fingerprint } from "../../src/util/hash.ts";

Deno.test("fingerprint: same bytes same value; any byte, length or split changed, another value", () => {
  const bytes = new Uint8Array(4099).map((_, i) => (i * 31 + 7) & 0xff);
  const base = fingerprint([bytes]);
  assert.match(base, /^[0-9a-f]{16}$/);
  assert.equal(fingerprint([bytes.slice()]), base);
  const seen = new Set([base]);
  for (const at of [0, 1, 2, 3, 2048, 4095, 4096, 4098]) {
    const other = bytes.slice();
    other[at]! ^= 1;
    seen.add(fingerprint([other]));
  }
  seen.add(fingerprint([bytes.subarray(0, 4098)]));
  seen.add(fingerprint([bytes.subarray(0, 100), bytes.subarray(100)]));
  assert.equal(seen.size, 11, "every variant differs from the others");
});

Deno.test("fingerprint: a view at an odd offset hashes as its own bytes", () => {
  const backing = new Uint8Array(1001).map((_, i) => i & 0xff);
  const view = backing.subarray(1);
  assert.equal(fingerprint([view]), fingerprint([view.slice()]));
});
