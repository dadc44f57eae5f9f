// The compiled executable runs the daemon with the V8 flags the testbed (and so the tests and the
// benchmark) give `deno run`: what is measured is what ships.
import assert from "node:assert/strict";
import { DAEMON_V8_FLAGS } from "../../src/daemon/runtime_flags.ts";
import { daemonArgs } from "../../testbed/daemon.ts";

Deno.test("the compiled daemon and the daemon run from source get the same V8 flags", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
  const compile = String(config.tasks.compile).split(/\s+/);
  assert.ok(
    compile.includes(`--v8-flags=${DAEMON_V8_FLAGS}`),
    `deno.json compile task: ${config.tasks.compile}`,
  );
  const args = daemonArgs({ cgroup: "/c", pinPath: "/p", stateDir: "/s", runDir: "/r" });
  const flag = args.indexOf(`--v8-flags=${DAEMON_V8_FLAGS}`);
  assert.ok(flag > 0 && flag < args.findIndex((a) => a.endsWith("main.ts")), args.join(" "));
});
