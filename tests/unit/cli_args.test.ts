import assert from "node:assert/strict";
import { helpText, parseFlags, UsageError } from "../../src/cli/args.ts";
import { DAEMON_FLAGS, DEFAULTS } from "../../src/cli/options.ts";
import { runCli } from "../../src/cli/main.ts";
import { COMMANDS } from "../../src/cli/commands.ts";
import type { MeshMode } from "../../src/mesh/types.ts";
import { resolveXdpMode } from "../../src/xdp/attacher.ts";

Deno.test("daemon flags: defaults, booleans with and without =value, choices, env", async (t) => {
  await t.step("defaults", () => {
    const f = parseFlags(DAEMON_FLAGS, []);
    assert.equal(f.mode, "istio");
    assert.equal(f["cni-mode"], false);
    assert.equal(f["bpf-pin-path"], DEFAULTS.pinPath);
    assert.equal(f["metrics-addr"], DEFAULTS.metricsAddr);
    assert.equal(f["cgroup-path"], undefined);
    assert.equal(f.sockmap, false, "the fast path is opt-in (README: known limitations)");
    assert.equal(f["xdp-mode"], "auto");
  });
  await t.step("--xdp-mode=auto resolves by driver: generic on veth, native elsewhere", () => {
    assert.equal(resolveXdpMode("auto", "veth"), "generic");
    assert.equal(resolveXdpMode("auto", "mlx5_core"), "native");
    assert.equal(resolveXdpMode("native", "veth"), "native");
    assert.equal(resolveXdpMode("generic", "ixgbe"), "generic");
  });
  await t.step("--cni-mode=false / --cni-mode=true / bare --cni-mode", () => {
    assert.equal(parseFlags(DAEMON_FLAGS, ["--cni-mode=false"])["cni-mode"], false);
    assert.equal(parseFlags(DAEMON_FLAGS, ["--cni-mode=true"])["cni-mode"], true);
    assert.equal(parseFlags(DAEMON_FLAGS, ["--cni-mode"])["cni-mode"], true);
  });
  await t.step("bad values name the flag", () => {
    assert.throws(() => parseFlags(DAEMON_FLAGS, ["--cni-mode=maybe"]), /--cni-mode: expected true or false/);
    assert.throws(() => parseFlags(DAEMON_FLAGS, ["--mode=envoy"]), /--mode: "envoy" is not one of istio/);
    assert.throws(() => parseFlags(DAEMON_FLAGS, ["--ingress-hook=ebpf"]), /--ingress-hook/);
    assert.throws(() => parseFlags(DAEMON_FLAGS, ["--xdp-mode=offload"]), /--xdp-mode/);
    assert.throws(() => parseFlags(DAEMON_FLAGS, ["--no-such-flag"]), UsageError);
    assert.throws(() => parseFlags(DAEMON_FLAGS, ["stray"]), UsageError);
  });
  await t.step("environment fallback", () => {
    const f = parseFlags(DAEMON_FLAGS, [], { env: { NODE_NAME: "node-7" } });
    assert.equal(f["node-name"], "node-7");
    assert.equal(
      parseFlags(DAEMON_FLAGS, ["--node-name=x"], { env: { NODE_NAME: "node-7" } })["node-name"],
      "x",
    );
  });
  await t.step("int flags", () => {
    const specs = { n: { type: "int", default: 3, min: 1, max: 5, description: "n" } } as const;
    assert.equal(parseFlags(specs, ["--n=4"]).n, 4);
    assert.throws(() => parseFlags(specs, ["--n=9"]), /outside 1..5/);
    assert.throws(() => parseFlags(specs, ["--n=x"]), /expected an integer/);
  });
  await t.step("help lists every flag with its default", () => {
    const h = helpText("merbridge daemon", "x", DAEMON_FLAGS);
    for (const name of Object.keys(DAEMON_FLAGS)) assert.ok(h.includes(`--${name}`), name);
    assert.ok(h.includes(JSON.stringify(DEFAULTS.pinPath)));
  });
});

Deno.test("runCli exit codes: unknown command and bad flags are 2, --help is 0", async () => {
  const errors: string[] = [];
  const logs: string[] = [];
  const origError = console.error, origLog = console.log;
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  console.log = (...a: unknown[]) => logs.push(a.join(" "));
  try {
    assert.equal(await runCli(["frobnicate"]), 2);
    assert.match(errors.join("\n"), /unknown command "frobnicate"/);
    assert.equal(await runCli(["daemon", "--mode=nope"]), 2);
    assert.match(errors.join("\n"), /--mode: "nope"/);
    assert.equal(await runCli(["status", "--help"]), 0);
    assert.match(logs.join("\n"), /--bpf-pin-path/);
    assert.equal(await runCli(["maps", "dump", "--help"]), 0);
    assert.equal(await runCli([]), 2);
  } finally {
    console.error = origError;
    console.log = origLog;
  }
});

Deno.test("each command gets its flags typed from its schema, and logging from its log flags", () => {
  const f = parseFlags(DAEMON_FLAGS, ["--mode=linkerd", "--conn-table-size=4096"]);
  // Checked by deno check: a choice flag is the union of its choices, an int a number, and a flag
  // without a default may be absent.
  const mode: MeshMode = f.mode;
  const size: number = f["conn-table-size"];
  // @ts-expect-error --cgroup-path has no default
  const cgroup: string = f["cgroup-path"];
  assert.deepEqual([mode, size, cgroup], ["linkerd", 4096, undefined]);

  const entry = (name: string) => COMMANDS.find((c) => c.name === name)!;
  assert.deepEqual(entry("status").parse([], {}).logging, { level: "info", format: "auto" });
  assert.deepEqual(entry("status").parse(["--debug"], {}).logging, { level: "debug", format: "auto" });
  assert.deepEqual(
    entry("pods").parse(["--log-level=warning", "--log-format=json"], {}).logging,
    { level: "warning", format: "json" },
  );
  // version has no log flags of its own.
  assert.deepEqual(entry("version").parse([], {}).logging, { level: "info", format: "auto" });
  assert.throws(() => entry("version").parse(["--debug"], {}), UsageError);
});
