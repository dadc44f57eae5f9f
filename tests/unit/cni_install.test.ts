// The installer against real directories: chaining into .conflist and .conf files, idempotence,
// exact restoration on uninstall, refusal of malformed files, the launcher, and the watcher.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  activeConfFile,
  CniConfigFileError,
  cniInstallStats,
  installCni,
  type InstallOptions,
  uninstallCni,
  watchCniConfig,
} from "../../src/installer/install.ts";

const REPO = new URL("../..", import.meta.url).pathname;

const CALICO = `{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "mtu": 1440,
      "ipam": { "type": "calico-ipam" },
      "kubernetes": { "kubeconfig": "/etc/cni/net.d/calico-kubeconfig" }
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": { "portMappings": true }
    }
  ]
}
`;

// Tab-indented, with a number form JSON.stringify would rewrite and a field order to keep.
const BRIDGE_CONF = `{
\t"cniVersion": "1.0.0",
\t"name": "mynet",
\t"type": "bridge",
\t"bridge": "cni0",
\t"isGateway": true,
\t"mtu": 1.5e3,
\t"ipam": {"type": "host-local", "subnet": "10.22.0.0/16", "routes": [{"dst": "0.0.0.0/0"}]}
}
`;

const PLUGIN_CONF = { socketPath: "/var/run/merbridge/cni.sock", failurePolicy: "fail", logLevel: "info" };

type Snapshot = Map<string, { text: string; mode: number }>;

async function snapshot(dir: string): Promise<Snapshot> {
  const out: Snapshot = new Map();
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    out.set(e.name, { text: await Deno.readTextFile(p), mode: (await Deno.stat(p)).mode! & 0o7777 });
  }
  return out;
}

async function fileId(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${st.ino}:${st.mtime?.getTime()}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Dirs {
  root: string;
  opts: InstallOptions;
}

async function setup(): Promise<Dirs> {
  const root = await Deno.makeTempDir({ prefix: "merbridge-cni-install-" });
  const binDir = join(root, "bin");
  const confDir = join(root, "net.d");
  await Deno.mkdir(binDir);
  await Deno.mkdir(confDir);
  const mainPath = join(root, "main.ts");
  await Deno.writeTextFile(mainPath, `import process from "node:process";\nconsole.log(process.argv0);\n`);
  return {
    root,
    opts: {
      binDir,
      confDir,
      stateDir: join(root, "state", "cni"),
      pluginConf: PLUGIN_CONF,
      source: { kind: "launcher", denoPath: Deno.execPath(), mainPath },
    },
  };
}

function pluginTypes(text: string): string[] {
  return (JSON.parse(text).plugins as { type: string }[]).map((p) => p.type);
}

Deno.test("CNI installer", async (t) => {
  await t.step("no configuration yet is reported, and nothing is written", async () => {
    const { root, opts } = await setup();
    try {
      const res = await installCni(opts);
      assert.deepEqual(res, { kind: "no-config", confDir: opts.confDir });
      assert.equal((await snapshot(opts.binDir)).size, 0);
      assert.equal(await exists(join(root, "state")), false);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step(".conflist: our entry is appended once, and uninstall restores every byte", async () => {
    const { root, opts } = await setup();
    try {
      const file = join(opts.confDir, "10-calico.conflist");
      await Deno.writeTextFile(file, CALICO);
      await Deno.chmod(file, 0o640);
      const before = await snapshot(opts.confDir);

      const installsBefore = cniInstallStats.installs;
      const res = await installCni(opts);
      assert.equal(res.kind, "installed");
      assert.ok(res.kind === "installed" && res.changed && res.confFile === file);
      assert.equal(cniInstallStats.installs, installsBefore + 1);
      const text = await Deno.readTextFile(file);
      assert.deepEqual(pluginTypes(text), ["calico", "portmap", "merbridge-cni"]);
      assert.deepEqual(JSON.parse(text).plugins[2], { type: "merbridge-cni", ...PLUGIN_CONF });
      // Everything that was there is still there, byte for byte, up to the end of the last plugin.
      const lastPlugin = CALICO.lastIndexOf("}", CALICO.lastIndexOf("]"));
      assert.equal(text.slice(0, lastPlugin + 1), CALICO.slice(0, lastPlugin + 1));
      assert.equal((await Deno.stat(file)).mode! & 0o777, 0o640);

      // A second install changes nothing: same inode, same mtime, for every file involved.
      const launcher = join(opts.binDir, "merbridge-cni");
      const state = join(opts.stateDir, "cni-install.json");
      const ids = await Promise.all([file, launcher, state].map(fileId));
      const again = await installCni(opts);
      assert.ok(again.kind === "installed" && !again.changed);
      assert.deepEqual(await Promise.all([file, launcher, state].map(fileId)), ids);
      assert.equal(cniInstallStats.installs, installsBefore + 1);

      const un = await uninstallCni(opts);
      assert.ok(un.changes.length >= 2);
      assert.deepEqual(await snapshot(opts.confDir), before);
      assert.equal((await snapshot(opts.binDir)).size, 0);
      assert.equal(await exists(opts.stateDir), false, "the state dir we created is gone");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step(
    "a lone .conf becomes a .conflist with no field lost, and comes back on uninstall",
    async () => {
      const { root, opts } = await setup();
      try {
        const conf = join(opts.confDir, "10-bridge.conf");
        const other = join(opts.confDir, "99-loopback.conf");
        await Deno.writeTextFile(conf, BRIDGE_CONF);
        await Deno.writeTextFile(other, `{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`);
        const before = await snapshot(opts.confDir);

        const res = await installCni(opts);
        const conflist = join(opts.confDir, "10-bridge.conflist");
        assert.ok(res.kind === "installed" && res.changed);
        assert.equal(res.confFile, conflist);
        assert.equal(await exists(conf), false, "the .conf no longer shadows the list");
        assert.equal(await activeConfFile(opts.confDir), conflist);
        const text = await Deno.readTextFile(conflist);
        const list = JSON.parse(text);
        const { cniVersion, name, ...rest } = JSON.parse(BRIDGE_CONF);
        assert.equal(list.cniVersion, cniVersion);
        assert.equal(list.name, name);
        assert.deepEqual(list.plugins, [rest, { type: "merbridge-cni", ...PLUGIN_CONF }]);
        assert.match(text, /"mtu": 1\.5e3/, "numbers are copied as written");
        assert.equal(await Deno.readTextFile(join(opts.stateDir, "original-10-bridge.conf")), BRIDGE_CONF);
        assert.equal(await Deno.readTextFile(other), before.get("99-loopback.conf")!.text);

        const id = await fileId(conflist);
        const again = await installCni(opts);
        assert.ok(again.kind === "installed" && !again.changed);
        assert.equal(await fileId(conflist), id);

        await uninstallCni(opts);
        assert.deepEqual(await snapshot(opts.confDir), before);
        assert.equal(await exists(opts.stateDir), false);
      } finally {
        await Deno.remove(root, { recursive: true });
      }
    },
  );

  await t.step(
    "the network plugin rewriting its .conf gets wrapped again, and uninstall restores the new one",
    async () => {
      const { root, opts } = await setup();
      try {
        const conf = join(opts.confDir, "10-bridge.conf");
        await Deno.writeTextFile(conf, BRIDGE_CONF);
        await installCni(opts);
        const rewritten = BRIDGE_CONF.replace("cni0", "cni1");
        await Deno.writeTextFile(conf, rewritten);
        const res = await installCni(opts);
        assert.ok(res.kind === "installed" && res.changed);
        assert.equal(await exists(conf), false);
        const list = JSON.parse(await Deno.readTextFile(join(opts.confDir, "10-bridge.conflist")));
        assert.equal(list.plugins[0].bridge, "cni1");
        assert.equal(list.plugins.length, 2);
        await uninstallCni(opts);
        assert.deepEqual([...(await snapshot(opts.confDir)).entries()], [["10-bridge.conf", {
          text: rewritten,
          mode: 0o644,
        }]]);
      } finally {
        await Deno.remove(root, { recursive: true });
      }
    },
  );

  await t.step("a generated list rewritten by someone else is treated as theirs from then on", async () => {
    const { root, opts } = await setup();
    try {
      await Deno.writeTextFile(join(opts.confDir, "10-bridge.conf"), BRIDGE_CONF);
      await installCni(opts);
      const conflist = join(opts.confDir, "10-bridge.conflist");
      // The network plugin now writes a list of its own under that name.
      const theirs = `{"cniVersion":"1.0.0","name":"mynet","plugins":[{"type":"bridge","bridge":"cni9"}]}`;
      await Deno.writeTextFile(conflist, theirs);
      const res = await installCni(opts);
      assert.ok(res.kind === "installed" && res.changed);
      assert.deepEqual(pluginTypes(await Deno.readTextFile(conflist)), ["bridge", "merbridge-cni"]);
      await uninstallCni(opts);
      // Their list comes back as they wrote it, and the old .conf is not resurrected next to it.
      assert.deepEqual([...(await snapshot(opts.confDir)).keys()], ["10-bridge.conflist"]);
      assert.equal(await Deno.readTextFile(conflist), theirs);
      assert.equal(await exists(opts.stateDir), false, "no saved copy left behind");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step("malformed or unusable files are refused, named, and left untouched", async () => {
    const cases: [string, string, RegExp][] = [
      [
        "10-broken.conflist",
        `{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "ptp"},]}`,
        /invalid JSON/,
      ],
      [
        "10-old.conflist",
        `{"cniVersion": "0.2.0", "name": "x", "plugins": [{"type": "ptp"}]}`,
        /cniVersion "0\.2\.0"/,
      ],
      ["10-empty.conflist", `{"cniVersion": "1.0.0", "name": "x", "plugins": []}`, /"plugins" is empty/],
      ["10-typeless.conf", `{"cniVersion": "1.0.0", "name": "x"}`, /"type"/],
      ["10-array.json", `[1, 2]`, /not an object/],
    ];
    for (const [name, content, problem] of cases) {
      const { root, opts } = await setup();
      try {
        const file = join(opts.confDir, name);
        await Deno.writeTextFile(file, content);
        const errorsBefore = cniInstallStats.errors;
        await assert.rejects(installCni(opts), (e) => {
          assert.ok(e instanceof CniConfigFileError, String(e));
          assert.equal(e.file, file);
          assert.ok(e.message.includes(file), e.message);
          assert.match(e.message, problem);
          return true;
        });
        assert.equal(cniInstallStats.errors, errorsBefore + 1);
        assert.equal(await Deno.readTextFile(file), content);
        assert.equal((await snapshot(opts.confDir)).size, 1);
        assert.equal(
          (await snapshot(opts.binDir)).size,
          0,
          "no plugin installed for a config we cannot chain into",
        );
        assert.equal(await exists(join(root, "state")), false);
      } finally {
        await Deno.remove(root, { recursive: true });
      }
    }
  });

  await t.step("wrapping never overwrites someone else's .conflist", async () => {
    const { root, opts } = await setup();
    try {
      await Deno.writeTextFile(
        join(opts.confDir, "10-a.conf"),
        `{"cniVersion":"1.0.0","name":"a","type":"ptp"}`,
      );
      const foreign = `{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}`;
      await Deno.writeTextFile(join(opts.confDir, "10-a.conflist"), foreign);
      const before = await snapshot(opts.confDir);
      await assert.rejects(installCni(opts), /10-a\.conflist: that file exists/);
      assert.deepEqual(await snapshot(opts.confDir), before);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step(
    "a new configuration replaces our entry in place; others' later edits survive uninstall",
    async () => {
      const { root, opts } = await setup();
      try {
        const file = join(opts.confDir, "10-calico.conflist");
        await Deno.writeTextFile(file, CALICO);
        await installCni(opts);
        await installCni({ ...opts, pluginConf: { ...PLUGIN_CONF, failurePolicy: "ignore" } });
        let list = JSON.parse(await Deno.readTextFile(file));
        assert.deepEqual(list.plugins.map((p: { type: string }) => p.type), [
          "calico",
          "portmap",
          "merbridge-cni",
        ]);
        assert.equal(list.plugins[2].failurePolicy, "ignore");
        // Unchanged since our last write: uninstall gives back the original bytes.
        await uninstallCni(opts);
        assert.equal(await Deno.readTextFile(file), CALICO);

        // Another plugin chains itself after us; uninstall takes out only our entry.
        await installCni(opts);
        list = JSON.parse(await Deno.readTextFile(file));
        list.plugins.push({ type: "istio-cni", kubernetes: {} });
        await Deno.writeTextFile(file, JSON.stringify(list, null, 2));
        await uninstallCni(opts);
        assert.deepEqual(pluginTypes(await Deno.readTextFile(file)), ["calico", "portmap", "istio-cni"]);
      } finally {
        await Deno.remove(root, { recursive: true });
      }
    },
  );

  await t.step("when a new file takes precedence, our entry moves there", async () => {
    const { root, opts } = await setup();
    try {
      await Deno.writeTextFile(join(opts.confDir, "10-calico.conflist"), CALICO);
      await installCni(opts);
      const cilium = `{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni"}]}`;
      await Deno.writeTextFile(join(opts.confDir, "05-cilium.conflist"), cilium);
      const res = await installCni(opts);
      assert.ok(res.kind === "installed" && res.changed);
      assert.equal(await Deno.readTextFile(join(opts.confDir, "10-calico.conflist")), CALICO);
      assert.deepEqual(pluginTypes(await Deno.readTextFile(join(opts.confDir, "05-cilium.conflist"))), [
        "cilium-cni",
        "merbridge-cni",
      ]);
      await uninstallCni(opts);
      assert.equal(await Deno.readTextFile(join(opts.confDir, "05-cilium.conflist")), cilium);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step("without a state file, uninstall still removes our entry and the plugin", async () => {
    const { root, opts } = await setup();
    try {
      const file = join(opts.confDir, "10-calico.conflist");
      await Deno.writeTextFile(file, CALICO);
      await installCni(opts);
      await Deno.remove(opts.stateDir, { recursive: true });
      await uninstallCni(opts);
      assert.equal(await Deno.readTextFile(file), CALICO);
      assert.equal(await exists(join(opts.binDir, "merbridge-cni")), false);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step("the launcher is executable and runs the entry point under the plugin's name", async () => {
    const { root, opts } = await setup();
    try {
      await Deno.writeTextFile(join(opts.confDir, "10-calico.conflist"), CALICO);
      const configPath = join(REPO, "deno.json");
      const source = {
        kind: "launcher" as const,
        denoPath: Deno.execPath(),
        mainPath: join(root, "main.ts"),
        configPath,
      };
      await installCni({ ...opts, source });
      const launcher = join(opts.binDir, "merbridge-cni");
      assert.equal((await Deno.stat(launcher)).mode! & 0o7777, 0o755);
      const script = await Deno.readTextFile(launcher);
      assert.ok(script.startsWith("#!/bin/bash\n"));
      assert.ok(
        script.includes(
          `exec -a merbridge-cni '${Deno.execPath()}' run -A --quiet --config '${configPath}' '${
            join(root, "main.ts")
          }' "$@"`,
        ),
        script,
      );
      // Run it from an unrelated directory with an empty environment, as a runtime would.
      const out = await new Deno.Command(launcher, {
        cwd: "/",
        clearEnv: true,
        env: { CNI_COMMAND: "VERSION" },
      })
        .output();
      assert.equal(new TextDecoder().decode(out.stdout).trim(), "merbridge-cni");

      // The real entry point answers VERSION through the launcher.
      await installCni({ ...opts, source: { ...source, mainPath: join(REPO, "cni", "entry.ts") } });
      const version = await new Deno.Command(launcher, {
        cwd: "/",
        clearEnv: true,
        env: { CNI_COMMAND: "VERSION" },
      })
        .output();
      assert.equal(version.code, 0, new TextDecoder().decode(version.stderr));
      assert.equal(JSON.parse(new TextDecoder().decode(version.stdout)).cniVersion, "1.1.0");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step("a compiled binary is copied with mode 0755 and only rewritten when it differs", async () => {
    const { root, opts } = await setup();
    try {
      await Deno.writeTextFile(join(opts.confDir, "10-calico.conflist"), CALICO);
      const bin = join(root, "merbridge");
      await Deno.writeTextFile(bin, "#!/bin/sh\necho v1\n");
      const o = { ...opts, source: { kind: "binary" as const, path: bin } };
      await installCni(o);
      const dest = join(opts.binDir, "merbridge-cni");
      assert.equal(await Deno.readTextFile(dest), "#!/bin/sh\necho v1\n");
      assert.equal((await Deno.stat(dest)).mode! & 0o7777, 0o755);
      const id = await fileId(dest);
      assert.ok((await installCni(o)).kind === "installed");
      assert.equal(await fileId(dest), id);
      await Deno.writeTextFile(bin, "#!/bin/sh\necho v2\n");
      const res = await installCni(o);
      assert.ok(res.kind === "installed" && res.changed);
      assert.equal(await Deno.readTextFile(dest), "#!/bin/sh\necho v2\n");
      await assert.rejects(
        installCni({ ...opts, source: { kind: "binary", path: join(root, "missing") } }),
        /does not exist/,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step("the watcher waits for a missing directory and stops promptly when aborted", async () => {
    const { root, opts } = await setup();
    try {
      const ac = new AbortController();
      const missing = join(root, "not-yet");
      const watching = watchCniConfig({ ...opts, confDir: missing, retryMs: 50 }, ac.signal);
      await new Promise((r) => setTimeout(r, 120));
      await Deno.mkdir(missing);
      await Deno.writeTextFile(join(missing, "10-calico.conflist"), CALICO);
      const file = join(missing, "10-calico.conflist");
      await until("the install into the late directory", async () => {
        return pluginTypes(await Deno.readTextFile(file)).includes("merbridge-cni");
      });
      const started = Date.now();
      ac.abort();
      await watching;
      assert.ok(Date.now() - started < 1_000, "abort ends the watch");
      await uninstallCni({ ...opts, confDir: missing });
      assert.equal(await Deno.readTextFile(file), CALICO);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });

  await t.step(
    "the watcher installs once the config appears, repairs a rewrite once, and does not loop",
    async () => {
      const { root, opts } = await setup();
      const ac = new AbortController();
      const file = join(opts.confDir, "10-calico.conflist");
      const start = { ...cniInstallStats };
      const watching = watchCniConfig({ ...opts, debounceMs: 100, retryMs: 200 }, ac.signal);
      try {
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(cniInstallStats.installs, start.installs, "nothing to install into yet");
        // The network plugin writes its configuration.
        await Deno.writeTextFile(file, CALICO);
        await until(
          "the first install",
          async () => pluginTypes(await Deno.readTextFile(file)).includes("merbridge-cni"),
        );
        // Counted once the write is durable, a moment after the file shows our entry.
        await until("the install to be counted", () => cniInstallStats.installs >= start.installs + 1);
        assert.equal(cniInstallStats.installs, start.installs + 1);
        assert.equal(cniInstallStats.repairs, start.repairs);

        // The network plugin rewrites its file (in place, not atomically), dropping our entry.
        await Deno.writeTextFile(file, CALICO);
        await until(
          "the repair",
          async () => pluginTypes(await Deno.readTextFile(file)).includes("merbridge-cni"),
        );
        await until("the repair to be counted", () => cniInstallStats.repairs === start.repairs + 1);

        // Our own write triggers at most a check that finds nothing to do.
        const settled = await fileId(file);
        const checks = cniInstallStats.checks;
        await new Promise((r) => setTimeout(r, 1_000));
        assert.equal(cniInstallStats.repairs, start.repairs + 1);
        assert.equal(await fileId(file), settled, "no further writes");
        assert.ok(
          cniInstallStats.checks - checks <= 2,
          `checks kept running: ${cniInstallStats.checks - checks}`,
        );
        assert.equal(cniInstallStats.errors, start.errors);
      } finally {
        ac.abort();
        await watching;
      }
      try {
        await uninstallCni(opts);
        assert.equal(await Deno.readTextFile(file), CALICO);
      } finally {
        await Deno.remove(root, { recursive: true });
      }
    },
  );
});
