// The daemon as users run it: a child process, a pods file, SIGTERM and restart.
import assert from "node:assert/strict";
import { formatPortRange } from "../../src/mesh/annotations.ts";
import { meshParams } from "../../src/mesh/modes.ts";
import {
  createNode,
  createPod,
  daemonHome,
  listening,
  nettool,
  podYaml,
  runCli,
  Scope,
  startDaemon,
  startNettool,
  startSidecar,
  stopDaemon,
  uniq,
  waitMaps,
} from "../../testbed/mod.ts";
import { PinnedDatapathMaps } from "../../src/datapath/datapath.ts";
import { makePod, startTlsApiServer } from "../../testbed/fake_apiserver.ts";
import { currentNetnsCookie } from "../../src/netns/cookie.ts";
import { connTableSizeFor, nodeMemoryBytes } from "../../src/datapath/sizing.ts";

const mesh = meshParams("istio");

async function setup(scope: Scope) {
  const prefix = uniq();
  const node = await createNode(scope, prefix);
  const home = await daemonHome(scope, { prefix, name: "d" });
  const { cgroup, pinPath, podsFile } = home;
  const a = await createPod(scope, node, "a", 10);
  const b = await createPod(scope, node, "b", 11);
  const r = await createPod(scope, node, "r", 100);
  const sc = startSidecar(scope, { netns: a.ns, cgroup, mesh, listen: ["outbound"] });
  await listening(sc);
  const srv = startNettool(scope, { netns: r.ns }, ["server", "--name", "r", "--port", "8080"]);
  await listening(srv);
  await Deno.writeTextFile(podsFile, podYaml("a", { ip: a.ip }));
  return {
    cgroup,
    pinPath,
    podsFile,
    a,
    b,
    r,
    sc,
    opts: home,
  };
}

Deno.test("kernel: daemon restart while a client connects in a loop: zero failures, all redirected", async () => {
  await using scope = new Scope();
  const s = await setup(scope);
  let daemon = await startDaemon(scope, s.opts);
  let ok = 0, failed = 0;
  const failures: unknown[] = [];
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const res = await nettool({ netns: s.a.ns, cgroup: s.cgroup, uid: 1000 }, ["client", `${s.r.ip}:8080`]);
      if (res.ok) ok++;
      else {
        failed++;
        failures.push(res);
      }
    }
  })();
  // Each phase lasts at least half a second and until three connections have finished in it, so a
  // slow machine (each client is a new process) still puts traffic in every phase.
  const phase = async (name: string) => {
    const from = ok + failed, t0 = Date.now();
    while (Date.now() - t0 < 500 || ok + failed - from < 3) {
      assert.ok(Date.now() - t0 < 30_000, `fewer than three connections finished in 30 s ${name}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    await phase("with the first daemon");
    assert.equal(await stopDaemon(daemon), 0, "daemon exits 0 on SIGTERM");
    await phase("while no daemon ran");
    daemon = await startDaemon(scope, s.opts);
    await phase("with the restarted daemon");
  } finally {
    stop = true;
    await loop;
  }
  assert.ok(
    daemon.stderr.some((l) => l.includes("programs reopened from their pins")),
    "the restarted daemon runs the programs its predecessor loaded, without verifying them again",
  );
  await stopDaemon(daemon);
  assert.equal(failed, 0, `failures: ${JSON.stringify(failures)}`);
  const accepted = s.sc.lines.filter((l) => l.event === "accepted" && l.orig === `${s.r.ip}:8080`).length;
  assert.equal(accepted, ok, "every connection went through the sidecar, including while no daemon ran");
  using m = new PinnedDatapathMaps(s.pinPath);
  assert.ok(m.maps.pods().has(s.a.ip), "the pod entry survived the restart");
});

Deno.test("kernel: pods file changes reach the maps within a second", async () => {
  await using scope = new Scope();
  const s = await setup(scope);
  const daemon = await startDaemon(scope, s.opts);
  await waitMaps(s.pinPath, (m) => m.maps.pods().has(s.a.ip));

  await Deno.writeTextFile(
    s.podsFile,
    podYaml("a", {
      ip: s.a.ip,
      annotations: { "traffic.sidecar.istio.io/excludeOutboundPorts": "8080, 9090" },
    }) +
      podYaml("b", { ip: s.b.ip }),
  );
  const t1 = await waitMaps(s.pinPath, (m) => {
    const p = m.maps.pods();
    return p.get(s.a.ip)?.excludeOutboundPorts.ranges.map(formatPortRange).join(",") === "8080,9090" &&
      p.has(s.b.ip);
  });
  assert.ok(t1 < 1000, `annotation change took ${t1} ms`);

  await Deno.writeTextFile(s.podsFile, podYaml("b", { ip: s.b.ip }));
  const t2 = await waitMaps(s.pinPath, (m) => !m.maps.pods().has(s.a.ip));
  assert.ok(t2 < 1000, `pod removal took ${t2} ms`);

  // A broken file keeps the last good state.
  await Deno.writeTextFile(s.podsFile, "kind: Pod\nmetadata: [unclosed");
  await new Promise((r) => setTimeout(r, 300));
  {
    using m = new PinnedDatapathMaps(s.pinPath);
    assert.ok(m.maps.pods().has(s.b.ip), "a malformed pods file must not empty the maps");
  }
  assert.equal(await stopDaemon(daemon), 0);
  assert.ok(daemon.stderr.some((l) => l.includes("keeping the previous")), "the bad file was reported");
});

const cli = runCli;

Deno.test("kernel: status, pods, maps dump, metrics and uninstall against a running daemon", async () => {
  await using scope = new Scope();
  const s = await setup(scope);
  const daemon = await startDaemon(scope, s.opts);
  await waitMaps(s.pinPath, (m) => m.maps.pods().has(s.a.ip));
  const res = await nettool({ netns: s.a.ns, cgroup: s.cgroup, uid: 1000 }, ["client", `${s.r.ip}:8080`]);
  assert.equal(res.ok, true);

  const status = await cli([
    "status",
    `--bpf-pin-path=${s.pinPath}`,
    `--state-dir=${s.opts.stateDir}`,
    `--daemon-addr=${daemon.metricsAddr}`,
    "--output=json",
  ]);
  assert.equal(status.code, 0, status.stderr);
  const st = JSON.parse(status.stdout);
  const health = Object.fromEntries(
    st.subsystems.map((x: { subsystem: string; health: string; detail: string }) => [x.subsystem, x.health]),
  );
  assert.deepEqual(health, {
    programs: "ok",
    maps: "ok",
    daemon: "ok",
    "pod source": "ok",
    "pod identity": "ok",
    "cni chain": "off",
    attachments: "off",
  }, JSON.stringify(st.subsystems));
  assert.deepEqual(st.links.map((l: { hook: string }) => l.hook).sort(), [
    "connect4",
    "connect6",
    "getpeername4",
    "getpeername6",
    "getsockopt",
    "sockops",
  ]);
  assert.ok(
    st.links.every((l: { program: string }) => l.program.startsWith("mb_")),
    JSON.stringify(st.links),
  );
  assert.equal(st.config.outboundPort, 15001);
  // The daemon names its own (the node's) network namespace, which the programs never capture in.
  assert.equal(st.config.hostNetns, String(currentNetnsCookie()));
  assert.equal(st.maps.find((m: { map: string }) => m.map === "local_pods").entries, 1);
  assert.ok(Number(st.counters.connect_redirect) >= 1);

  const table = await cli(["status", `--bpf-pin-path=${s.pinPath}`, `--state-dir=${s.opts.stateDir}`]);
  assert.match(table.stdout, /HOOK\s+CGROUP-ID/);
  assert.match(table.stdout, /sockmap fast path off/, "the daemon's default shows");
  assert.match(table.stdout, /SUBSYSTEM\s+HEALTH\s+DETAIL/);
  assert.equal(st.config.sockmap, false);
  // Each subsystem says why it is not healthy: a detached program, a daemon that does not answer.
  const link6 = `${s.pinPath}/links/${Deno.statSync(s.cgroup).ino}/connect6`;
  Deno.removeSync(link6);
  const broken = JSON.parse(
    (await cli(["status", `--bpf-pin-path=${s.pinPath}`, "--daemon-addr=127.0.0.1:1", "--output=json"]))
      .stdout,
  );
  const sub = (n: string) => broken.subsystems.find((x: { subsystem: string }) => x.subsystem === n);
  assert.equal(sub("programs").health, "error");
  assert.match(sub("programs").detail, /connect6/);
  assert.equal(sub("daemon").health, "error");

  const pods = JSON.parse(
    (await cli(["pods", `--bpf-pin-path=${s.pinPath}`, `--run-dir=${s.opts.runDir}`, "--output=json"]))
      .stdout,
  );
  assert.equal(pods[0].ip, s.a.ip);
  assert.equal(pods[0].pod, "default/a", "the name comes from the daemon's pod table");
  // explain resolves the pod by name through the daemon's local socket.
  const ex = await cli([
    "explain",
    "default/a",
    `${s.r.ip}:8080`,
    `--bpf-pin-path=${s.pinPath}`,
    `--run-dir=${s.opts.runDir}`,
    "--output=json",
  ]);
  assert.equal(ex.code, 0, ex.stderr);
  const exj = JSON.parse(ex.stdout);
  assert.deepEqual([exj.verdict, exj.pod.name, exj.pod.ip, exj.pod.identified], [
    "redirect",
    "default/a",
    s.a.ip,
    true,
  ]);
  assert.equal(pods[0].policy.includeOutboundCidrs.all, true);
  assert.equal(pods[0].identity.length, 1, JSON.stringify(pods[0].identity));
  assert.equal(pods[0].identity[0].via, "netns", "found by the daemon's namespace scan");
  // The default dirs name one directory twice (/var/run is /run): the namespace is still listed once.
  assert.match(pods[0].identity[0].netns, new RegExp(`^(/var)?/run/netns/${s.a.ns}$`));
  const podsTable = await cli(["pods", `--bpf-pin-path=${s.pinPath}`, `--run-dir=${s.opts.runDir}`]);
  assert.match(podsTable.stdout, /IDENTITY/);
  assert.match(podsTable.stdout, new RegExp(`netns:${pods[0].identity[0].cookie}`));

  const dump = await cli(["maps", "dump", "local_pods", `--bpf-pin-path=${s.pinPath}`, "--output=json"]);
  assert.equal(JSON.parse(dump.stdout)[0].ip, s.a.ip);
  const badDump = await cli(["maps", "dump", "nope", `--bpf-pin-path=${s.pinPath}`]);
  assert.equal(badDump.code, 2);
  assert.match(badDump.stderr, /give one of [a-z_, ]*mesh_config/);

  const onNetwork = await fetch(`${daemon.metricsUrl}/pods`);
  assert.equal(onNetwork.status, 404, "the pod table is not on the network port");
  await onNetwork.body?.cancel();
  const ready = await fetch(`${daemon.metricsUrl}/readyz`);
  assert.equal(ready.status, 200);
  await ready.body?.cancel();
  const metrics = await (await fetch(`${daemon.metricsUrl}/metrics`)).text();
  assert.match(metrics, /merbridge_bpf_events_total\{event="connect_redirect"\} [1-9]/);
  assert.match(metrics, /merbridge_pods\{state="meshed"\} 1/);
  assert.match(metrics, /merbridge_ready 1/);
  assert.match(metrics, /merbridge_pods_identified\{via="netns"\} 1/);
  assert.match(metrics, /merbridge_pods_identified\{via="none"\} 0/);
  assert.match(metrics, /merbridge_map_entries\{map="local_pods"\} 1/);
  // Sized from the node's memory by default, and counted without walking the table.
  const cap = connTableSizeFor(nodeMemoryBytes());
  assert.match(metrics, new RegExp(`merbridge_map_capacity\\{map="pair_orig_dst"\\} ${cap}\n`));
  assert.match(metrics, /merbridge_map_entries\{map="pair_orig_dst"\} \d+\n/);
  assert.match(metrics, /merbridge_map_entries\{map="ingress_syn"\} 0\n/);

  const uninstallArgs = [
    "uninstall",
    `--bpf-pin-path=${s.pinPath}`,
    `--run-dir=${s.opts.runDir}`,
    `--state-dir=${s.opts.stateDir}`,
    `--cni-config-dir=${s.opts.stateDir}/none`,
    `--cni-bin-dir=${s.opts.stateDir}/none`,
  ];
  const refused = await cli(uninstallArgs);
  assert.equal(refused.code, 1, "the local API answers in every mode, so uninstall sees the daemon");
  assert.match(refused.stderr, /a merbridge daemon is running/);
  const forced = await cli([...uninstallArgs, "--force"]);
  assert.equal(forced.code, 0, forced.stderr);
  await stopDaemon(daemon);
  let gone = false;
  try {
    Deno.statSync(s.pinPath);
  } catch {
    gone = true;
  }
  assert.ok(gone, "uninstall removed the pin directory");
  const after = await nettool({ netns: s.a.ns, cgroup: s.cgroup, uid: 1000 }, ["client", `${s.r.ip}:8080`]);
  assert.equal(after.ok, true);
  const accepted = s.sc.lines.filter((l) => l.event === "accepted").length;
  assert.equal(accepted, 1, "after uninstall nothing is redirected any more");
});

Deno.test("kernel: pods from the Kubernetes API (TLS, token, list + watch) reach the maps", async () => {
  await using scope = new Scope();
  const s = await setup(scope);
  const dir = await Deno.makeTempDir({ prefix: "merbridge-kube-test-" });
  scope.defer(() => Deno.remove(dir, { recursive: true }));
  const { api, pki } = await startTlsApiServer(scope, dir, "t0ken");
  const meshed = { "sidecar.istio.io/status": "{}" };
  api.addPod(makePod("a", { node: "test-node", ip: s.a.ip, annotations: meshed }));
  api.addPod(makePod("elsewhere", { node: "other-node", ip: "10.9.9.9", annotations: meshed }));
  const kubeconfig = `${dir}/kubeconfig`;
  await Deno.writeTextFile(
    kubeconfig,
    `apiVersion: v1
kind: Config
current-context: test
contexts:
- name: test
  context: {cluster: test, user: test}
clusters:
- name: test
  cluster: {server: "${api.url}", certificate-authority: "${pki.files.caCert}"}
users:
- name: test
  user: {token: t0ken}
`,
  );
  const daemon = await startDaemon(scope, {
    ...s.opts,
    podsFile: undefined,
    extra: [`--kubeconfig=${kubeconfig}`],
  });
  await waitMaps(s.pinPath, (m) => m.maps.pods().has(s.a.ip));
  {
    using m = new PinnedDatapathMaps(s.pinPath);
    assert.ok(!m.maps.pods().has("10.9.9.9"), "a pod of another node is not ours");
  }
  api.updatePod("default", "a", (p) => {
    p.metadata!.annotations = { ...meshed, "traffic.sidecar.istio.io/excludeOutboundPorts": "5432" };
  });
  const t1 = await waitMaps(
    s.pinPath,
    (m) => m.maps.pods().get(s.a.ip)?.excludeOutboundPorts.ranges[0]?.from === 5432,
  );
  assert.ok(t1 < 1000, `annotation change took ${t1} ms`);
  api.deletePod("default", "a");
  await waitMaps(s.pinPath, (m) => !m.maps.pods().has(s.a.ip));
  assert.equal(await stopDaemon(daemon), 0);
});

Deno.test("kernel: an upgrade that changed a map's layout: the daemon replaces that pin and refills it", async () => {
  await using scope = new Scope();
  const s = await setup(scope);
  let daemon = await startDaemon(scope, s.opts);
  await waitMaps(s.pinPath, (m) => m.maps.pods().has(s.a.ip));
  assert.equal(await stopDaemon(daemon), 0);

  // What an older build would have left: local_pods pinned with another value size, empty.
  const pin = `${s.pinPath}/maps/local_pods`;
  await Deno.remove(pin);
  const made = await new Deno.Command("bpftool", {
    args: [
      "map",
      "create",
      pin,
      "type",
      "hash",
      "key",
      "4",
      "value",
      "396",
      "entries",
      "64",
      "name",
      "local_pods",
    ],
    stderr: "piped",
  }).output();
  assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));

  daemon = await startDaemon(scope, s.opts);
  await waitMaps(s.pinPath, (m) => m.maps.pods().has(s.a.ip));
  assert.ok(
    daemon.stderr.some((l) => l.includes("local_pods") && l.includes("does not match this build")),
    "the replacement is logged with the map's name",
  );
  assert.ok(
    daemon.stderr.some((l) => l.includes("pinned programs not reused") && l.includes("local_pods")),
    "programs loaded with the old local_pods are not reused",
  );
  const res = await nettool({ netns: s.a.ns, cgroup: s.cgroup, uid: 1000 }, ["client", `${s.r.ip}:8080`]);
  assert.ok(res.ok, JSON.stringify(res));
  assert.ok(
    s.sc.lines.some((l) => l.event === "accepted" && l.orig === `${s.r.ip}:8080`),
    "after the upgrade the pod's connection still goes through its sidecar",
  );
  assert.equal(await stopDaemon(daemon), 0);
});
