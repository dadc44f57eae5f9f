// The CNI plugin run as the runtime runs it: a separate process with CNI_* variables and the
// network configuration on stdin, talking to a fake daemon served in this process.
import assert from "node:assert/strict";
import { join } from "node:path";
import type { DaemonRequest, DaemonResponse } from "../../cni/protocol.ts";
import { serveDaemonSocket } from "../../src/daemon/socket_server.ts";
import { run } from "../../testbed/proc.ts";
import { FakeApiServer, makePod } from "../../testbed/fake_apiserver.ts";

const ENTRY = new URL("../../cni/entry.ts", import.meta.url).pathname;
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** The single JSON document on stdout, or null when stdout is empty. */
  doc: Record<string, unknown> | null;
}

async function runPlugin(env: Record<string, string>, stdin: string): Promise<Run> {
  const base: Record<string, string> = { NO_COLOR: "1" };
  for (const k of ["HOME", "DENO_DIR", "PATH"]) {
    const v = Deno.env.get(k);
    if (v) base[k] = v;
  }
  const { code, stdout, stderr } = await run(Deno.execPath(), [
    "run",
    "-A",
    "--quiet",
    "--config",
    CONFIG,
    ENTRY,
  ], {
    env: { ...base, ...env },
    clearEnv: true,
    stdin,
    allowFail: true,
  });
  // JSON.parse rejects anything but exactly one document (plus whitespace).
  const doc = stdout.trim() === "" ? null : JSON.parse(stdout) as Record<string, unknown>;
  return { code, stdout, stderr, doc };
}

const PREV_RESULT = `{
      "cniVersion": "1.0.0",
      "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:07", "sandbox": "/var/run/netns/cni-1"}],
      "ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1", "interface": 0}],
      "dns": {}
    }`;

function netconf(extra: Record<string, unknown> = {}, prevResult: string | null = PREV_RESULT): string {
  const fields = { cniVersion: "1.0.0", name: "k8s-pod-network", type: "merbridge-cni", ...extra };
  const body = JSON.stringify(fields, null, 2);
  if (prevResult === null) return body;
  return body.slice(0, body.lastIndexOf("}")).trimEnd() + `,\n  "prevResult": ${prevResult}\n}`;
}

function cniEnv(command: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: "3f6940ab5ab43bc5",
    CNI_NETNS: "/var/run/netns/cni-1",
    CNI_IFNAME: "eth0",
    CNI_PATH: "/opt/cni/bin",
    CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7d9f;" +
      "K8S_POD_INFRA_CONTAINER_ID=3f6940ab5ab43bc5;K8S_POD_UID=0c3f-11aa",
    ...extra,
  };
}

function assertError(run: Run, code: number): Record<string, unknown> {
  assert.equal(run.code, 1, `exit code (stderr: ${run.stderr})`);
  assert.ok(run.doc, "an error document on stdout");
  assert.equal(run.doc.code, code, `error code in ${run.stdout}`);
  assert.equal(typeof run.doc.msg, "string");
  assert.ok((run.doc.msg as string).length > 0);
  assert.equal(typeof run.doc.cniVersion, "string");
  return run.doc;
}

Deno.test("CNI plugin", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-cni-plugin-" });
  const socketPath = join(dir, "run", "cni.sock");
  const deadSocket = join(dir, "nobody", "cni.sock");
  const seen: DaemonRequest[] = [];
  let answer: (req: DaemonRequest) => Promise<DaemonResponse> = () =>
    Promise.resolve({ ok: true, inMesh: true });
  const server = serveDaemonSocket(socketPath, (req) => {
    seen.push(req);
    return answer(req);
  });
  const conf = (extra: Record<string, unknown> = {}, prev: string | null = PREV_RESULT) =>
    netconf({ socketPath, ...extra }, prev);

  try {
    await t.step("VERSION lists the supported spec versions", async () => {
      const run = await runPlugin({ CNI_COMMAND: "VERSION" }, `{"cniVersion":"1.0.0"}`);
      assert.equal(run.code, 0);
      assert.deepEqual(run.doc, {
        cniVersion: "1.1.0",
        supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
      });
    });

    await t.step("ADD tells the daemon and passes prevResult through byte for byte", async () => {
      seen.length = 0;
      answer = () => Promise.resolve({ ok: true, inMesh: true, podIp: "10.244.1.7" });
      const run = await runPlugin(cniEnv("ADD"), conf());
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), PREV_RESULT);
      assert.equal(seen.length, 1);
      assert.deepEqual(seen[0], {
        op: "add",
        containerId: "3f6940ab5ab43bc5",
        netns: "/var/run/netns/cni-1",
        ifName: "eth0",
        podNamespace: "shop",
        podName: "cart-7d9f",
        podUid: "0c3f-11aa",
        cniVersion: "1.0.0",
        podIps: ["10.244.1.7"],
      });
    });

    await t.step("ADD for a pod outside the mesh changes nothing", async () => {
      answer = () => Promise.resolve({ ok: true, inMesh: false });
      const run = await runPlugin(cniEnv("ADD"), conf());
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(run.doc, JSON.parse(PREV_RESULT));
    });

    await t.step("ADD without a Kubernetes pod in CNI_ARGS does not ask the daemon", async () => {
      seen.length = 0;
      const run = await runPlugin(cniEnv("ADD", { CNI_ARGS: "IgnoreUnknown=1" }), conf());
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(run.doc, JSON.parse(PREV_RESULT));
      assert.equal(seen.length, 0);
    });

    await t.step("ADD passes the daemon's error code through", async () => {
      answer = () => Promise.resolve({ ok: false, code: 3, msg: "no such container", details: "netns gone" });
      const doc = assertError(await runPlugin(cniEnv("ADD"), conf()), 3);
      assert.equal(doc.msg, "no such container");
      assert.equal(doc.details, "netns gone");
      assert.equal(doc.cniVersion, "1.0.0");
    });

    await t.step("ADD with the daemon down fails with 'try again later'", async () => {
      const doc = assertError(await runPlugin(cniEnv("ADD"), netconf({ socketPath: deadSocket })), 11);
      assert.match(String(doc.details), /unreachable/);
    });

    await t.step("ADD with the daemon down succeeds under failurePolicy ignore", async () => {
      const run = await runPlugin(
        cniEnv("ADD"),
        netconf({ socketPath: deadSocket, failurePolicy: "ignore" }),
      );
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(run.doc, JSON.parse(PREV_RESULT));
    });

    await t.step(
      "daemon down, pods file: a pod outside the mesh starts, a meshed or unreadable one waits",
      async () => {
        const podsFile = join(dir, "pods.yaml");
        const pod = (name: string, proxy: boolean, extra = "") =>
          `---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: shop, name: ${name}${extra}}\n` +
          `spec:\n  nodeName: node-a\n  containers: [{name: app}${proxy ? ", {name: istio-proxy}" : ""}]\n`;
        await Deno.writeTextFile(podsFile, pod("cart-7d9f", false) + pod("pay-1", true));
        const membership = { mode: "istio", nodeName: "node-a", podsFile };
        const down = netconf({ socketPath: deadSocket, membership });
        const plain = await runPlugin(cniEnv("ADD"), down);
        assert.equal(plain.code, 0, plain.stderr);
        assert.equal(plain.stdout.trim(), PREV_RESULT);

        const meshedEnv = cniEnv("ADD", { CNI_ARGS: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=pay-1" });
        const doc = assertError(await runPlugin(meshedEnv, down), 11);
        assert.match(
          String(doc.msg),
          /pod shop\/pay-1 is in the mesh and the merbridge daemon is not reachable/,
        );

        // A pod the file does not list is not meshed for the daemon either.
        const other = await runPlugin(
          cniEnv("ADD", { CNI_ARGS: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=x" }),
          down,
        );
        assert.equal(other.code, 0, other.stderr);
        // Another node's pod of the same name in the file does not count for this node.
        const elsewhere = netconf({
          socketPath: deadSocket,
          membership: { ...membership, nodeName: "node-b" },
        });
        assert.equal((await runPlugin(meshedEnv, elsewhere)).code, 0);

        await Deno.writeTextFile(podsFile, "kind: Pod\nmetadata: [broken");
        const broken = assertError(await runPlugin(cniEnv("ADD"), down), 11);
        assert.match(String(broken.msg), /could not be judged/);

        const status = await runPlugin(cniEnv("STATUS"), down);
        assert.equal(status.code, 0, "STATUS stays ready: pods outside the mesh can still start");
        assertError(
          await runPlugin(cniEnv("ADD"), netconf({ socketPath: deadSocket, membership: { mode: "x" } })),
          7,
        );
      },
    );

    await t.step(
      "daemon down, API server: the plugin reads the pod with the installer's kubeconfig",
      async () => {
        const api = await FakeApiServer.start({ token: "plugin-token" });
        try {
          api.addPod(makePod("cart-7d9f", { namespace: "shop" }));
          const meshed = makePod("pay-1", { namespace: "shop" });
          meshed.spec!.containers.push({ name: "istio-proxy" });
          api.addPod(meshed);
          const kubeconfig = join(dir, "cni-kubeconfig");
          await Deno.writeTextFile(
            kubeconfig,
            JSON.stringify({
              clusters: [{ name: "c", cluster: { server: api.url } }],
              users: [{ name: "u", user: { token: "plugin-token" } }],
              contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
              "current-context": "x",
            }),
          );
          const down = netconf({
            socketPath: deadSocket,
            membership: { mode: "istio", nodeName: "node-a", kubeconfig },
          });
          const plain = await runPlugin(cniEnv("ADD"), down);
          assert.equal(plain.code, 0, plain.stderr);
          assert.ok(api.requests.some((r) => r.kind === "get" && r.authorization === "Bearer plugin-token"));
          const doc = assertError(
            await runPlugin(cniEnv("ADD", { CNI_ARGS: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=pay-1" }), down),
            11,
          );
          assert.match(String(doc.msg), /is in the mesh/);
          // Not found or refused: no evidence either way, so the pod waits.
          assertError(
            await runPlugin(cniEnv("ADD", { CNI_ARGS: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=gone" }), down),
            11,
          );
          api.failNext("get", 500);
          assertError(await runPlugin(cniEnv("ADD"), down), 11);
        } finally {
          await api.close();
        }
      },
    );

    await t.step("ADD gives up on a daemon that does not answer within timeoutMs", async () => {
      answer = () => new Promise((r) => setTimeout(() => r({ ok: true }), 3_000));
      const started = Date.now();
      assertError(await runPlugin(cniEnv("ADD"), conf({ timeoutMs: 200 })), 11);
      assert.ok(Date.now() - started < 2_900, "returned before the daemon would have answered");
      answer = () => Promise.resolve({ ok: true, inMesh: true });
    });

    await t.step("ADD as the first plugin (no prevResult) is a configuration error", async () => {
      assertError(await runPlugin(cniEnv("ADD"), conf({}, null)), 7);
    });

    await t.step("a configuration for another plugin type is rejected with code 7", async () => {
      assertError(await runPlugin(cniEnv("ADD"), conf({ type: "bridge" })), 7);
    });

    await t.step("invalid plugin fields are rejected with code 7", async () => {
      for (
        const bad of [{ failurePolicy: "maybe" }, { timeoutMs: -5 }, { logLevel: "loud" }, {
          socketPath: "rel",
        }]
      ) {
        const doc = assertError(await runPlugin(cniEnv("ADD"), conf(bad)), 7);
        assert.match(String(doc.msg), new RegExp(Object.keys(bad)[0]!));
      }
    });

    await t.step("stdin that is not JSON is a decode failure (6)", async () => {
      assertError(await runPlugin(cniEnv("ADD"), "{not json"), 6);
      assertError(await runPlugin(cniEnv("ADD"), ""), 6);
    });

    await t.step("missing or invalid CNI_* variables are code 4", async () => {
      for (const drop of ["CNI_NETNS", "CNI_IFNAME", "CNI_CONTAINERID"]) {
        const env = cniEnv("ADD");
        delete env[drop];
        const doc = assertError(await runPlugin(env, conf()), 4);
        assert.match(String(doc.msg), new RegExp(drop));
      }
      assertError(await runPlugin(cniEnv("ADD", { CNI_IFNAME: "eth0/1" }), conf()), 4);
      assertError(await runPlugin(cniEnv("ADD", { CNI_ARGS: "K8S_POD_NAME" }), conf()), 4);
      assertError(await runPlugin(cniEnv("FROB"), conf()), 4);
      const noCommand = cniEnv("ADD");
      delete noCommand.CNI_COMMAND;
      assertError(await runPlugin(noCommand, conf()), 4);
    });

    await t.step("an unsupported cniVersion is code 1", async () => {
      const doc = assertError(await runPlugin(cniEnv("ADD"), conf({ cniVersion: "0.2.0" })), 1);
      assert.match(String(doc.details), /0\.2\.0/);
      assertError(await runPlugin(cniEnv("ADD"), conf({ cniVersion: "2.0.0" })), 1);
    });

    await t.step("0.3.1, 0.4.0 and 1.1.0 configurations are accepted", async () => {
      for (const v of ["0.3.1", "0.4.0", "1.1.0"]) {
        const prev = JSON.stringify({ cniVersion: v, ips: [{ address: "10.0.0.2/24" }] });
        const run = await runPlugin(cniEnv("ADD"), conf({ cniVersion: v }, prev));
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.stdout.trim(), prev);
      }
    });

    await t.step("DEL succeeds and prints nothing whether the daemon is up or down", async () => {
      seen.length = 0;
      answer = () => Promise.resolve({ ok: true });
      let run = await runPlugin(cniEnv("DEL"), conf());
      assert.equal(run.code, 0);
      assert.equal(run.stdout, "");
      assert.equal(seen[0]?.op, "del");

      run = await runPlugin(cniEnv("DEL", { CNI_NETNS: "" }), netconf({ socketPath: deadSocket }));
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, "");

      answer = () => Promise.resolve({ ok: false, code: 3, msg: "unknown container" });
      run = await runPlugin(cniEnv("DEL"), conf());
      assert.equal(run.code, 0);
      assert.equal(run.stdout, "");
    });

    await t.step("CHECK asks the daemon and reports its failure", async () => {
      seen.length = 0;
      answer = () => Promise.resolve({ ok: true });
      let run = await runPlugin(cniEnv("CHECK"), conf());
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, "");
      assert.equal(seen[0]?.op, "check");
      answer = () => Promise.resolve({ ok: false, code: 11, msg: "mark listener missing" });
      run = await runPlugin(cniEnv("CHECK"), conf());
      assert.equal(assertError(run, 11).msg, "mark listener missing");
    });

    await t.step("STATUS: success when the daemon answers, code 50 when it does not", async () => {
      answer = () => Promise.resolve({ ok: true });
      const env = { CNI_COMMAND: "STATUS", CNI_PATH: "/opt/cni/bin" };
      const up = await runPlugin(env, conf({ cniVersion: "1.1.0" }, null));
      assert.equal(up.code, 0, up.stderr);
      assert.equal(up.stdout, "");
      assertError(await runPlugin(env, netconf({ cniVersion: "1.1.0", socketPath: deadSocket }, null)), 50);
    });

    await t.step("GC forwards the valid attachments and succeeds even with the daemon down", async () => {
      seen.length = 0;
      answer = () => Promise.resolve({ ok: true });
      const env = { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" };
      const attachments = [{ containerID: "aaa1", ifname: "eth0" }, { containerID: "bbb2", ifname: "net1" }];
      let run = await runPlugin(
        env,
        conf({ cniVersion: "1.1.0", "cni.dev/valid-attachments": attachments }, null),
      );
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, "");
      assert.equal(seen[0]?.op, "gc");
      assert.deepEqual(seen[0]?.validAttachments, [
        { containerId: "aaa1", ifName: "eth0" },
        { containerId: "bbb2", ifName: "net1" },
      ]);
      run = await runPlugin(
        env,
        netconf({ cniVersion: "1.1.0", socketPath: deadSocket, "cni.dev/valid-attachments": [] }, null),
      );
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, "");
    });

    await t.step("GC without an attachment list does not ask the daemon to clean anything", async () => {
      seen.length = 0;
      const run = await runPlugin({ CNI_COMMAND: "GC" }, conf({ cniVersion: "1.1.0" }, null));
      assert.equal(run.code, 0, run.stderr);
      assert.equal(seen.length, 0);
    });

    await t.step("logs go to stderr and to logFile, never to stdout", async () => {
      const logFile = join(dir, "plugin.log");
      answer = () => Promise.resolve({ ok: true, inMesh: true });
      const run = await runPlugin(cniEnv("ADD"), conf({ logFile, logLevel: "debug" }));
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), PREV_RESULT);
      assert.match(run.stderr, /3f6940ab5ab43bc5/);
      const lines = (await Deno.readTextFile(logFile)).trim().split("\n");
      assert.ok(lines.length >= 1);
      assert.ok(lines.every((l) => typeof JSON.parse(l).msg === "string"));
      // The daemon's line format: the template rendered, its values also as fields.
      const add = lines.map((l) => JSON.parse(l)).find((l) => l.containerId === "3f6940ab5ab43bc5");
      assert.ok(add, lines.join("\n"));
      assert.equal(add.logger, "merbridge.cni.plugin");
      assert.equal(add.level, "info");
      assert.match(add.msg, /^ADD 3f6940ab5ab43bc5 \(shop\/cart-7d9f\): interception set up/);
      assert.ok(!Number.isNaN(Date.parse(add.ts)));
    });
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
