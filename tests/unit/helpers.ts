// Small assertions the unit and kernel tests share.
import assert from "node:assert/strict";

/** The exception `fn` throws, for assertions on its fields; fails when nothing is thrown. */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail("expected an exception");
}
