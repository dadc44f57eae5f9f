// CNI mode end to end: the daemon chains its plugin into a real bridge + host-local conflist, a
// runtime-like driver ADDs pods through the chain, and traffic from another "node" is intercepted by
// XDP/TC on the pod's interface. Checksums are verified in software after a forwarding hop: offload is
// off on the client's and the forwarding node's veths, so no hop trusts a partial checksum.
import assert from "node:assert/strict";
import { BpfLink } from "../../src/bpf/link.ts";
import { PinnedDatapathMaps } from "../../src/datapath/datapath.ts";
import { meshParams } from "../../src/mesh/modes.ts";
import {
  cniAdd,
  cniDel,
  cniExec,
  type CniInvocation,
  cniNode,
  createNetns,
  type DaemonProcOptions,
  inNs,
  loopbackRelay,
  nettool,
  podDoc,
  PodRuntime,
  podYaml,
  run,
  runCli,
  Scope,
  sidecarReady,
  sleep,
  startDaemon,
  startNettool,
  startSidecar,
  stopDaemon,
  uniq,
} from "../../testbed/mod.ts";
import { readNetns } from "../../src/netns/discover.ts";
import { serviceAccountMount, startTlsApiServer } from "../../testbed/fake_apiserver.ts";

const mesh = meshParams("istio");

interface CniWorldOptions {
  flags?: string[];
  pods?: string; // pods file content
  /** Replaces these of the daemon's options (podsFile undefined: pods from the API). */
  daemon?: Partial<DaemonProcOptions>;
}

async function cniWorld(scope: Scope, o: CniWorldOptions = {}) {
  const n = await cniNode(scope, { network: "testnet", name: "cni" });
  const { home } = n;
  await Deno.writeTextFile(
    home.podsFile,
    o.pods ??
      (podYaml("p1", { annotations: { "traffic.sidecar.istio.io/excludeOutboundPorts": "9090" } }) +
        podYaml("p2") +
        podYaml("plain", { meshed: false })),
  );
  const daemonOpts = { ...home, ...o.daemon, extra: ["--cni-mode=true", ...(o.flags ?? [])] };
  let daemon = await startDaemon(scope, daemonOpts);
  const chained = JSON.parse(await Deno.readTextFile(n.conflist));
  assert.deepEqual(chained.plugins.map((p: { type: string }) => p.type), ["bridge", "merbridge-cni"]);

  // After the daemon: pods still attached at the end are removed the way the runtime would, first.
  const rt = new PodRuntime(scope, n.chain, n.prefix);
  return {
    dir: home.dir,
    k: n.k,
    node: n.node,
    client: n.client,
    cgroup: home.cgroup,
    pinPath: home.pinPath,
    conflist: n.conflist,
    daemonOpts,
    get daemon() {
      return daemon;
    },
    async restartDaemonAfterStop(extra: string[] = []) {
      daemon = await startDaemon(scope, { ...daemonOpts, extra: [...daemonOpts.extra, ...extra] });
    },
    inv: (name: string, ns: string) => rt.inv(name, ns),
    addPod: (name: string) => rt.addPod(name),
    async delPod(name: string) {
      await rt.delPod(name);
    },
    pod: (name: string) => rt.pod(name),
  };
}

async function sidecar(scope: Scope, w: { cgroup: string }, ns: string, dualStack = false) {
  const p = startSidecar(scope, { netns: ns, cgroup: w.cgroup, mesh, dualStack });
  await sidecarReady(p, ["inbound", "outbound"], 5000);
  return p;
}

/** An ADD through the chain that our plugin must refuse: the message and the plugin's error document. */
async function refusedAdd(
  inv: CniInvocation,
): Promise<{ refused: string; doc: { code: number; msg: string } }> {
  let refused = "";
  await assert.rejects(cniAdd(inv), (e: Error) => {
    refused = e.message;
    return true;
  });
  assert.match(refused, /ADD merbridge-cni failed/, `the bridge plugin succeeded; ours refused: ${refused}`);
  // The testbed's CNI runtime puts the plugin's stdout (one line: the error document) first, then its stderr.
  return { refused, doc: JSON.parse(refused.slice(refused.indexOf("{"), refused.indexOf("\n"))) };
}

async function marksListening(ns: string): Promise<string[]> {
  const out = await inNs(ns, "ss", ["-Htlne", "sport = :39807"]);
  return [...out.stdout.matchAll(/fwmark:0x([0-9a-f]+)/g)].map((m) => m[1]!);
}

Deno.test("kernel: CNI ADD creates the mark listener and map entries; per-pod outbound annotations apply", async (t) => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const p1 = await w.addPod("p1");
  const p2 = await w.addPod("p2");
  const plain = await w.addPod("plain");

  await t.step("each meshed pod listens on 39807 with its mark, and the mark maps to its IP", async () => {
    using m = new PinnedDatapathMaps(w.pinPath);
    const marks = m.maps.marks();
    for (const p of [p1, p2]) {
      const listening = await marksListening(p.ns);
      assert.equal(listening.length, 1, `one 39807 listener in ${p.ns}`);
      assert.equal(marks.get(parseInt(listening[0]!, 16)), p.ip);
      assert.ok(m.maps.pods().has(p.ip), `local_pods has ${p.ip}`);
    }
    assert.deepEqual(await marksListening(plain.ns), [], "a pod outside the mesh is left alone");
    assert.equal(marks.size, 2);
  });

  await t.step("merbridge status finds the chain and the attachments healthy", async () => {
    const out = await runCli([
      "status",
      `--bpf-pin-path=${w.pinPath}`,
      `--state-dir=${w.dir}/state`,
      `--cni-config-dir=${w.dir}/net.d`,
      `--cni-bin-dir=${w.dir}/bin`,
      "--output=json",
    ]);
    assert.equal(out.code, 0, out.stderr);
    const sub = (n: string) =>
      JSON.parse(out.stdout).subsystems.find((x: { subsystem: string }) => x.subsystem === n);
    assert.equal(sub("cni chain").health, "ok", JSON.stringify(sub("cni chain")));
    assert.match(sub("cni chain").detail, /10-testnet\.conflist: bridge -> merbridge-cni/);
    assert.equal(sub("attachments").health, "ok", JSON.stringify(sub("attachments")));
  });

  await t.step("the ADD's namespace cookies outlive the daemon's identity scans", async () => {
    // The pods file gives no IPs here, so only the attachments keep these entries in the desired state.
    await sleep(1500);
    using m = new PinnedDatapathMaps(w.pinPath);
    const cookies = m.maps.netnsPods();
    for (const p of [p1, p2]) {
      assert.equal(cookies.get(readNetns(`/run/netns/${p.ns}`).cookie), p.ip, `${p.ns}'s cookie`);
    }
  });

  await t.step("p1 excludes outbound 9090, p2 does not", async () => {
    for (const port of [8080, 9090]) {
      const s = startNettool(scope, { netns: w.client }, [
        "server",
        "--name",
        "remote",
        "--port",
        String(port),
      ]);
      await s.waitFor((l) => l.event === "listening");
    }
    const sc1 = await sidecar(scope, w, p1.ns);
    const sc2 = await sidecar(scope, w, p2.ns);
    const remote = `10.251.${w.k}.2`;
    const through = async (ns: string, sc: typeof sc1, port: number) => {
      const from = sc.lines.length;
      const res = await nettool({ netns: ns, cgroup: w.cgroup, uid: 1000 }, ["client", `${remote}:${port}`]);
      assert.equal(res.ok, true, JSON.stringify(res));
      const acc = sc.lines.slice(from).filter((l) => l.event === "accepted");
      if (acc.length) {
        // Identified pods are bound to their own IP, as iptables REDIRECT would keep the source.
        assert.match(String(acc[0]!.peer), new RegExp(`^${ns === p1.ns ? p1.ip : p2.ip}:`));
        assert.equal(acc[0]!.orig, `${remote}:${port}`);
      }
      return acc.length === 1;
    };
    assert.equal(await through(p1.ns, sc1, 9090), false, "p1 -> 9090 excluded");
    assert.equal(await through(p1.ns, sc1, 8080), true, "p1 -> 8080 redirected");
    assert.equal(await through(p2.ns, sc2, 9090), true, "p2 -> 9090 redirected");
  });

  await t.step("DEL removes listener, map entries and ingress attachments", async () => {
    // Our plugin alone first (a runtime runs DEL in reverse, so ours runs before the bridge removes
    // eth0), to look at the interface while it still exists.
    const list = JSON.parse(await Deno.readTextFile(w.conflist));
    const ours = { ...list.plugins[1], cniVersion: list.cniVersion, name: list.name, prevResult: p1.result };
    const del = await cniExec(w.inv("p1", p1.ns), "DEL", "merbridge-cni", ours);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.deepEqual(await marksListening(p1.ns), []);
    using m = new PinnedDatapathMaps(w.pinPath);
    assert.ok(![...m.maps.marks().values()].includes(p1.ip));
    assert.ok(![...m.maps.netnsPods().values()].includes(p1.ip));
    assert.ok(!m.maps.pods().has(p1.ip));
    const tc = await inNs(p1.ns, "tc", ["filter", "show", "dev", "eth0", "egress"]);
    assert.equal(tc.stdout.trim(), "", "no tc filter left on the pod interface");
    const pins = [...Deno.readDirSync(`${w.pinPath}/pods`)].map((e) => e.name);
    assert.equal(pins.length, 1, `only p2's attachment is pinned: ${pins}`);
    const tx = await inNs(p1.ns, "ethtool", ["-k", "eth0"]);
    assert.match(tx.stdout, /tx-checksumming: on/, "the offload we switched off is back on");
    await w.delPod("p1");
  });
});

async function inboundCase(flags: string[]) {
  await using scope = new Scope();
  const w = await cniWorld(scope, { flags });
  const p1 = await w.addPod("p1");
  const sc = await sidecar(scope, w, p1.ns);
  const bulk = startNettool(scope, { netns: p1.ns, cgroup: w.cgroup, uid: 2000 }, [
    "bulk-server",
    "--port",
    "8080",
    "--bytes",
    String(4 << 20),
  ]);
  await bulk.waitFor((l) => l.event === "listening");
  const sink = startNettool(scope, { netns: p1.ns, cgroup: w.cgroup, uid: 2000 }, [
    "slow-sink",
    "--port",
    "7071",
    "--delay-ms",
    "0",
  ]);
  await sink.waitFor((l) => l.event === "listening");
  // Another node's packets arrive with complete checksums; a same-node pod's, over the bridge with its
  // veth's offload on, with checksums still to be completed. Both directions, 4 MiB each.
  const plain = await w.addPod("plain");
  for (const [who, ns] of [["another node", w.client], ["a plain pod on the same node", plain.ns]] as const) {
    const down = await nettool({ netns: ns }, ["bulk-client", `${p1.ip}:8080`, "--bytes", String(4 << 20)]);
    assert.equal(down.ok, true, `${who}: 4 MiB from the pod intact: ${JSON.stringify(down)}`);
    const up = await nettool({ netns: ns }, ["upload", `${p1.ip}:7071`, "--bytes", String(4 << 20)]);
    assert.equal(up.ok, true, `${who}: 4 MiB into the pod intact: ${JSON.stringify(up)}`);
  }
  // The sidecar forwards to the pod's own IP from 127.0.0.6, as Envoy does: that hop must not be
  // captured again (each connection reaches the sidecar once and the app once).
  assert.deepEqual(
    sc.lines.filter((l) => l.event === "loop"),
    [],
    "the inbound hop came back to the sidecar",
  );
  const acc = sc.lines.filter((l) => l.event === "accepted");
  assert.ok(acc.every((l) => l.kind === "inbound"), JSON.stringify(acc));
  let sent = 0;
  await bulk.waitFor((l) => l.event === "sent" && ++sent === 2, 2000, "the app's two downloads");
  const served = bulk.lines.filter((l) => l.event === "sent").map((l) => String(l.peer).split(":")[0]);
  assert.deepEqual(served, ["127.0.0.6", "127.0.0.6"], "the app saw the sidecar's passthrough source");
  assert.deepEqual(
    acc.map((l) => l.orig),
    [`${p1.ip}:8080`, `${p1.ip}:7071`, `${p1.ip}:8080`, `${p1.ip}:7071`],
    "every connection reached the sidecar's inbound port with its original destination",
  );
  using m = new PinnedDatapathMaps(w.pinPath);
  const c = m.maps.counters();
  assert.ok(
    c.ingress_redirect > 0n && c.egress_restore > 0n,
    `counters ${JSON.stringify(c, (_k, v) => String(v))}`,
  );
  const tx = await inNs(p1.ns, "ethtool", ["-k", "eth0"]);
  const hw = flags.includes("--hardware-checksum=true");
  assert.match(tx.stdout, new RegExp(`tx-checksumming: ${hw ? "on" : "off"}`));
  const link = (await inNs(p1.ns, "ip", ["-d", "link", "show", "eth0"])).stdout;
  if (flags.includes("--ingress-hook=tc")) assert.doesNotMatch(link, /prog\/xdp/);
  else if (flags.includes("--xdp-mode=native")) assert.match(link, / xdp qdisc/, `native XDP: ${link}`);
  else assert.match(link, / xdpgeneric qdisc/, `on a veth, auto means generic XDP: ${link}`);
  return { w, m };
}

Deno.test("kernel: inbound via XDP (generic on veth), offload off: from another node and a same-node pod, 4 MiB each way intact", async () => {
  await inboundCase([]);
});

Deno.test("kernel: inbound via native XDP (--xdp-mode=native): SO_ORIGINAL_DST and 4 MiB intact", async () => {
  await inboundCase(["--xdp-mode=native"]);
});

Deno.test("kernel: inbound via XDP with --hardware-checksum=true: checksums still right", async () => {
  await inboundCase(["--hardware-checksum=true"]);
});

Deno.test("kernel: inbound via --ingress-hook=tc", async () => {
  await inboundCase(["--ingress-hook=tc"]);
});

Deno.test("kernel: CNI error cases answer per spec, and DEL succeeds with the daemon down", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const ns = await createNetns(scope, `${uniq()}x`);
  const inv = w.inv("p2", ns);
  const bad = await cniExec(inv, "ADD", "merbridge-cni", {
    cniVersion: "9.9.9",
    name: "x",
    type: "merbridge-cni",
  });
  assert.notEqual(bad.code, 0);
  assert.equal(JSON.parse(bad.stdout).code, 1, "unsupported version is error code 1");
  await stopDaemon(w.daemon);
  const conf = JSON.parse(await Deno.readTextFile(w.conflist)).plugins[1];
  const del = await cniExec(inv, "DEL", "merbridge-cni", { ...conf, cniVersion: "1.0.0", name: "testnet" });
  assert.equal(del.code, 0, `DEL with the daemon down: ${del.stdout} ${del.stderr}`);
  assert.equal(del.stdout.trim(), "");
  const add = await cniExec(inv, "ADD", "merbridge-cni", {
    ...conf,
    cniVersion: "1.0.0",
    name: "testnet",
    prevResult: { cniVersion: "1.0.0", ips: [{ address: "10.1.1.1/24" }] },
  });
  assert.notEqual(add.code, 0, "ADD with the daemon down fails (the pod would bypass the mesh)");
  assert.equal(JSON.parse(add.stdout).code, 11, "try again later");
  await run("true", []);
});

Deno.test("kernel: with the daemon gone, a pod outside the mesh starts and a meshed one waits for it", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const entry = JSON.parse(await Deno.readTextFile(w.conflist)).plugins[1];
  assert.equal(
    entry.membership?.podsFile,
    w.daemonOpts.podsFile,
    "the installer told the plugin the pod source",
  );
  assert.equal(await stopDaemon(w.daemon), 0);

  const plain = await w.addPod("plain");
  assert.deepEqual(await marksListening(plain.ns), [], "nothing set up for a pod outside the mesh");

  const ns = await createNetns(scope, `${uniq()}m`);
  const inv = w.inv("p1", ns);
  const { doc } = await refusedAdd(inv);
  assert.equal(doc.code, 11, "try again later: the runtime retries the sandbox");
  assert.match(doc.msg, /pod default\/p1 is in the mesh and the merbridge daemon is not reachable/);
  // A runtime tears down a sandbox whose ADD failed before retrying.
  await cniDel(inv);

  await w.restartDaemonAfterStop();
  const p1 = await w.addPod("p1");
  assert.equal((await marksListening(p1.ns)).length, 1, "the retried ADD set up the mark listener");
  using m = new PinnedDatapathMaps(w.pinPath);
  assert.ok(m.maps.pods().has(p1.ip), "the meshed pod is in local_pods");
  assert.ok(!m.maps.pods().has(plain.ip), "the plain pod is not");
});

Deno.test("kernel: in a cluster (service account, no kubeconfig): pods from the API, and with the daemon gone the plugin asks the API with the account's rotated token", async () => {
  await using scope = new Scope();
  const dir = await Deno.makeTempDir({ prefix: "merbridge-sa-test-" });
  scope.defer(() => Deno.remove(dir, { recursive: true }));
  const { api, pki } = await startTlsApiServer(scope, dir, "t0ken");
  for (const name of ["p1", "p2", "p3"]) api.addPod(podDoc(name));
  for (const name of ["plain", "plain2"]) api.addPod(podDoc(name, { meshed: false }));
  const { dir: sa, env } = await serviceAccountMount(`${dir}/serviceaccount`, api, pki, "t0ken");
  const w = await cniWorld(scope, {
    flags: [`--service-account-dir=${sa}`],
    daemon: { podsFile: undefined, env },
  });
  assert.ok(
    w.daemon.stderr.some((l) => l.includes("in-cluster service account")),
    w.daemon.stderr.join("\n"),
  );
  // The plugin runs in the node's namespace, where on a real node the daemon is too (hostNetwork).
  loopbackRelay(scope, w.node, Number(new URL(api.url).port));

  const p1 = await w.addPod("p1");
  assert.equal((await marksListening(p1.ns)).length, 1, "a pod the API says is meshed is attached");
  const plain = await w.addPod("plain");
  assert.deepEqual(await marksListening(plain.ns), [], "a pod the API says is not meshed is left alone");

  // The plugin's copy of the credentials: root-only, beside the daemon's state, named in the chain.
  const entry = JSON.parse(await Deno.readTextFile(w.conflist)).plugins[1];
  const creds = `${w.dir}/state/cni-kubeconfig`;
  assert.equal(entry.membership?.kubeconfig, creds);
  assert.equal((await Deno.stat(creds)).mode! & 0o777, 0o600);
  assert.equal(JSON.parse(await Deno.readTextFile(creds)).users[0].user.token, "t0ken");

  // The kubelet rotates the token and the API server stops taking the old one: the daemon's watch
  // comes back with the new one, and the plugin's copy follows within its 10 s refresh.
  api.token = "t1ken";
  await Deno.writeTextFile(`${sa}/token`, "t1ken");
  api.dropWatches();
  const deadline = Date.now() + 20_000;
  while (JSON.parse(await Deno.readTextFile(creds)).users[0].user.token !== "t1ken") {
    assert.ok(Date.now() < deadline, "the plugin's credentials still hold the old token after 20 s");
    await sleep(200);
  }
  const p2 = await w.addPod("p2");
  assert.equal((await marksListening(p2.ns)).length, 1, "pods still come from the API after the rotation");

  assert.equal(await stopDaemon(w.daemon), 0);
  const gets = api.requestsOf("get").length;
  const plain2 = await w.addPod("plain2");
  assert.deepEqual(await marksListening(plain2.ns), [], "a pod outside the mesh starts without the daemon");
  const ns = await createNetns(scope, `${uniq()}m`);
  const inv = w.inv("p3", ns);
  const { refused, doc } = await refusedAdd(inv);
  assert.equal(doc.code, 11, refused);
  assert.match(doc.msg, /pod default\/p3 is in the mesh and the merbridge daemon is not reachable/);
  assert.equal(api.requestsOf("get").length - gets, 2, "the plugin read each pod from the API itself");
  await cniDel(inv);
});

Deno.test("kernel: a meshed pod unknown at its ADD is repaired in place; GC, CHECK and DEL handle its record", async () => {
  await using scope = new Scope();
  const plainOnly = podYaml("plain", { meshed: false });
  const w = await cniWorld(scope, { pods: plainOnly });
  const late = await w.addPod("late");
  assert.deepEqual(await marksListening(late.ns), [], "unknown at ADD: nothing attached");

  await Deno.writeTextFile(w.daemonOpts.podsFile, plainOnly + podYaml("late", { ip: late.ip }));
  const deadline = Date.now() + 5_000;
  while ((await marksListening(late.ns)).length === 0) {
    if (Date.now() > deadline) throw new Error(`not repaired: ${w.daemon.stderr.join("\n")}`);
    await sleep(100);
  }
  // The listener opens before the pass that opened it logs: its line may be a moment behind.
  for (let i = 0; i < 20 && !w.daemon.stderr.some((l) => l.includes("repaired default/late")); i++) {
    await sleep(50);
  }
  assert.ok(w.daemon.stderr.some((l) => l.includes("repaired default/late")), "a log line names the pod");
  const metrics = await (await fetch(`${w.daemon.metricsUrl}/metrics`)).text();
  assert.match(metrics, /merbridge_pods_repaired_total 1\n/);
  assert.match(metrics, /merbridge_pods_unattached 0\n/);
  const ready = await fetch(`${w.daemon.metricsUrl}/readyz`);
  assert.equal(ready.status, 200, await ready.text());
  {
    using m = new PinnedDatapathMaps(w.pinPath);
    assert.ok(m.maps.pods().has(late.ip), "in local_pods");
    assert.deepEqual([...m.maps.marks().values()], [late.ip]);
  }

  const entry = {
    ...JSON.parse(await Deno.readTextFile(w.conflist)).plugins[1],
    cniVersion: "1.1.0",
    name: "testnet",
  };
  const inv = w.inv("late", late.ns);
  // The runtime's list never names the daemon's own record; GC must not take it.
  const gc = await cniExec(inv, "GC", "merbridge-cni", {
    ...entry,
    "cni.dev/valid-attachments": [{ containerID: "someone-else", ifname: "eth0" }],
  });
  assert.equal(gc.code, 0, gc.stderr);
  assert.equal((await marksListening(late.ns)).length, 1, "GC kept the repaired pod");

  const check = await cniExec(inv, "CHECK", "merbridge-cni", { ...entry, prevResult: late.result });
  assert.equal(check.code, 0, `${check.stdout} ${check.stderr}`);
  const recs = JSON.parse(await Deno.readTextFile(`${w.dir}/state/attachments.json`));
  assert.deepEqual(
    recs.map((r: { containerId: string }) => r.containerId),
    [inv.containerId],
    "adopted the runtime's ID",
  );

  await w.delPod("late");
  assert.deepEqual(await marksListening(late.ns).catch(() => []), []);
  using m = new PinnedDatapathMaps(w.pinPath);
  assert.equal(m.maps.marks().size, 0, "DEL found the repaired record");
  assert.deepEqual([...Deno.readDirSync(`${w.pinPath}/pods`)], [], "its pins went with it");
});

Deno.test("kernel: CNI requests for different pods do not wait on each other", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  // A pod the daemon does not know: it waits a second for the pod source before answering.
  const order: string[] = [];
  const slow = w.addPod("stranger").then(() => order.push("stranger"));
  await sleep(200);
  const t0 = performance.now();
  await w.addPod("p1");
  order.push("p1");
  const fastMs = performance.now() - t0;
  await slow;
  assert.deepEqual(
    order,
    ["p1", "stranger"],
    `p1's ADD (${fastMs.toFixed(0)} ms) did not queue behind the slow one`,
  );
  assert.equal((await marksListening(w.pod("p1").ns)).length, 1);
});

Deno.test("kernel: 50 parallel ADDs then DELs leave zero residue", async () => {
  await using scope = new Scope();
  const names = Array.from({ length: 50 }, (_, i) => `q${i}`);
  const w = await cniWorld(scope, { pods: names.map((n) => podYaml(n)).join("") });
  const pool = async (fn: (n: string) => Promise<unknown>) => {
    const queue = [...names];
    await Promise.all(Array.from({ length: 10 }, async () => {
      for (let n = queue.shift(); n; n = queue.shift()) await fn(n);
    }));
  };
  await pool((n) => w.addPod(n));
  {
    using m = new PinnedDatapathMaps(w.pinPath);
    assert.equal(m.maps.marks().size, 50);
    assert.equal(m.maps.pods().size, 50);
    assert.equal(new Set(m.maps.marks().keys()).size, 50, "every pod has its own mark");
  }
  await pool((n) => w.delPod(n));
  using m = new PinnedDatapathMaps(w.pinPath);
  assert.equal(m.maps.marks().size, 0, "no mark entry left");
  assert.equal(m.maps.pods().size, 0, "no pod entry left");
  assert.deepEqual([...Deno.readDirSync(`${w.pinPath}/pods`)], [], "no per-pod pin left");
  const state = JSON.parse(await Deno.readTextFile(`${w.dir}/state/attachments.json`));
  assert.deepEqual(state, []);
});

Deno.test("kernel: CNI-mode restart: pods stay identified while no daemon runs; listeners come back with the same marks", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const p1 = await w.addPod("p1");
  const s = startNettool(scope, { netns: w.client }, ["server", "--name", "remote", "--port", "9090"]);
  await s.waitFor((l) => l.event === "listening");
  const sc = await sidecar(scope, w, p1.ns);
  const marksBefore = await marksListening(p1.ns);
  const excludedStillDirect = async () => {
    const from = sc.lines.length;
    const res = await nettool({ netns: p1.ns, cgroup: w.cgroup, uid: 1000 }, [
      "client",
      `10.251.${w.k}.2:9090`,
    ]);
    assert.equal(res.ok, true, JSON.stringify(res));
    return sc.lines.slice(from).filter((l) => l.event === "accepted").length === 0;
  };
  assert.ok(await excludedStillDirect(), "p1's excluded port is direct with the daemon up");
  await stopDaemon(w.daemon);
  assert.deepEqual(await marksListening(p1.ns), [], "the listener died with the daemon");
  assert.ok(await excludedStillDirect(), "still excluded while no daemon runs (namespace cookie identity)");
  await w.restartDaemonAfterStop();
  assert.deepEqual(await marksListening(p1.ns), marksBefore, "the same mark is listening again");
  assert.ok(await excludedStillDirect());
});

/** A CNI-added pod with its sidecar and an app on :8080; `inbound()` checks a connection from the other node. */
async function podWithApp(scope: Scope, w: Awaited<ReturnType<typeof cniWorld>>) {
  const p1 = await w.addPod("p1");
  const sc = await sidecar(scope, w, p1.ns);
  const srv = startNettool(scope, { netns: p1.ns, cgroup: w.cgroup, uid: 2000 }, [
    "server",
    "--name",
    "app",
    "--port",
    "8080",
  ]);
  await srv.waitFor((l) => l.event === "listening");
  return {
    p1,
    sc,
    link: async () => (await inNs(p1.ns, "ip", ["-d", "link", "show", "eth0"])).stdout,
    async inbound() {
      const from = sc.lines.length;
      const res = await nettool({ netns: w.client }, ["client", `${p1.ip}:8080`]);
      const seen = sc.lines.slice(from);
      assert.equal(res.ok, true, `${JSON.stringify(res)}; sidecar: ${JSON.stringify(seen)}`);
      const acc = seen.filter((l) => l.event === "accepted");
      assert.equal(acc.length, 1, "inbound reaches the sidecar once");
      assert.equal(acc[0]!.orig, `${p1.ip}:8080`);
      assert.match(String((res.hello as Record<string, string>).peer), /^127\.0\.0\.6:/);
    },
  };
}

Deno.test("kernel: a restart with --ingress-hook=tc --hardware-checksum=true moves running pods to them", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const { p1, link, inbound } = await podWithApp(scope, w);
  const tcIngress = async () =>
    (await inNs(p1.ns, "tc", ["filter", "show", "dev", "eth0", "ingress"])).stdout;
  const tx = async () => (await inNs(p1.ns, "ethtool", ["-k", "eth0"])).stdout;
  assert.match(await link(), /xdp/, "XDP attached first");
  assert.equal((await tcIngress()).trim(), "");
  assert.match(await tx(), /tx-checksumming: off/);

  await stopDaemon(w.daemon);
  await w.restartDaemonAfterStop(["--ingress-hook=tc", "--hardware-checksum=true"]);
  assert.doesNotMatch(await link(), /prog\/xdp/, "the XDP program is gone");
  assert.match(await tcIngress(), /direct-action/, "TC ingress took over");
  assert.match(await tx(), /tx-checksumming: on/, "offload is back on");
  await inbound();
  const state = JSON.parse(await Deno.readTextFile(`${w.daemonOpts.stateDir}/attachments.json`));
  assert.deepEqual(
    state.map((r: { hook: string; txChanged: boolean }) => [r.hook, r.txChanged]),
    [["tc", false]],
    "the state file records the new settings, so uninstall leaves offload as it is",
  );
});

Deno.test("kernel: a restart with another --xdp-mode re-attaches running pods in that mode", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope, { flags: ["--xdp-mode=native"] });
  const { link, inbound } = await podWithApp(scope, w);
  assert.match(await link(), / xdp qdisc/);
  await stopDaemon(w.daemon);
  await w.restartDaemonAfterStop(["--xdp-mode=generic"]);
  assert.match(await link(), / xdpgeneric qdisc/);
  await inbound();
  const pins = [...Deno.readDirSync(`${w.pinPath}/pods`)];
  assert.equal(pins.length, 1, "one attachment, not two");
});

Deno.test("kernel: a lost state file: the restarted daemon finds the running pod by its IP and attaches it", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const p1 = await w.addPod("p1");
  await stopDaemon(w.daemon);
  await Deno.remove(`${w.dir}/state/attachments.json`);
  await Deno.remove(`${w.dir}/state/attachments.json.prev`);
  // By now the API reports the pod's IP, as it does for any running pod.
  await Deno.writeTextFile(`${w.dir}/pods.yaml`, podYaml("p1", { ip: p1.ip }));
  await w.restartDaemonAfterStop(["--netns-dirs=/run/netns"]);
  const marks = await marksListening(p1.ns);
  assert.equal(marks.length, 1, `a listener again; daemon said: ${w.daemon.stderr.join("\n")}`);
  using m = new PinnedDatapathMaps(w.pinPath);
  assert.equal(m.maps.marks().get(parseInt(marks[0]!, 16)), p1.ip);
  const state = JSON.parse(await Deno.readTextFile(`${w.dir}/state/attachments.json`));
  assert.equal(state.length, 1);
  assert.equal(state[0].podName, "p1");
});

Deno.test("kernel: a torn state file detaches no running pod: it keeps its XDP link, mark and pins", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const p1 = await w.addPod("p1");
  const pins = () => [...Deno.readDirSync(`${w.pinPath}/pods`)].map((e) => e.name).sort();
  const [key] = pins();
  assert.ok(key?.endsWith(`@${p1.ip.replaceAll(".", "_")}`), `the pin directory carries the pod IP: ${key}`);
  const linkId = () => {
    using l = BpfLink.openPinned(`${w.pinPath}/pods/${key}/xdp`);
    return l.info().id;
  };
  const linkBefore = linkId();
  const marksBefore = await marksListening(p1.ns);
  await stopDaemon(w.daemon);
  const file = `${w.dir}/state/attachments.json`;
  const text = await Deno.readTextFile(file);
  await Deno.writeTextFile(file, text.slice(0, 40));
  await Deno.writeTextFile(`${file}.prev`, "{");
  await Deno.writeTextFile(w.daemonOpts.podsFile, podYaml("p1", { ip: p1.ip }) + podYaml("p2"));
  await w.restartDaemonAfterStop(["--netns-dirs=/run/netns"]);
  assert.ok(
    w.daemon.stderr.some((l) => l.includes("rebuilding from what is attached")),
    "the damage is reported",
  );
  assert.deepEqual(pins(), [key], "the pod took its own pins back");
  assert.equal(linkId(), linkBefore, "the same XDP link: never detached");
  assert.deepEqual(await marksListening(p1.ns), marksBefore, "the same mark is listening again");
  {
    using m = new PinnedDatapathMaps(w.pinPath);
    assert.deepEqual([...m.maps.marks()], [[parseInt(marksBefore[0]!, 16), p1.ip]], "no stale mark entry");
  }
  const recs = JSON.parse(await Deno.readTextFile(file));
  assert.deepEqual(recs.map((r: { podName: string }) => r.podName), ["p1"], "the state file is whole again");
  await w.delPod("p1");
  assert.deepEqual(pins(), [], "DEL of the rebuilt record removed the pins");
  await sleep(500);
  assert.deepEqual(pins(), [], "and the repair pass did not bring back a pod the runtime deleted");
  using m = new PinnedDatapathMaps(w.pinPath);
  assert.equal(m.maps.marks().size, 0);
});

Deno.test("kernel: switching CNI mode off removes the chain entry, the plugin and the pod attachments", async () => {
  await using scope = new Scope();
  const w = await cniWorld(scope);
  const p1 = await w.addPod("p1");
  await stopDaemon(w.daemon);
  await w.restartDaemonAfterStop(["--cni-mode=false"]);
  const list = JSON.parse(await Deno.readTextFile(w.conflist));
  assert.deepEqual(list.plugins.map((p: { type: string }) => p.type), ["bridge"]);
  assert.deepEqual([...Deno.readDirSync(`${w.dir}/bin`)], [], "plugin removed from the CNI bin dir");
  assert.deepEqual(await marksListening(p1.ns), []);
  using m = new PinnedDatapathMaps(w.pinPath);
  assert.equal(m.maps.marks().size, 0);
  const tc = await inNs(p1.ns, "tc", ["filter", "show", "dev", "eth0", "egress"]);
  assert.equal(tc.stdout.trim(), "");
});

/**
 * Inbound IPv6 through the pod interface's programs. The node's IPv4 set-up is the bridge plugin's;
 * IPv6 is added by hand on top (the pod source then lists the pod's second IP, as Kubernetes does for a
 * dual-stack pod): fd01:k::/64 on the bridge, fd02:k::/64 towards the other node, forwarding on.
 */
async function inboundCase6(flags: string[]) {
  await using scope = new Scope();
  const w = await cniWorld(scope, { flags });
  const p1 = await w.addPod("p1");
  const plain = await w.addPod("plain");
  const v6 = (net: number, host: number) => `fd0${net}:${w.k}::${host.toString(16)}`;
  await inNs(w.node, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
  await inNs(w.node, "ip", ["-6", "addr", "add", `${v6(1, 1)}/64`, "dev", "cni0", "nodad"]);
  await inNs(w.node, "ip", ["-6", "addr", "add", `${v6(2, 1)}/64`, "dev", "n0", "nodad"]);
  await inNs(w.client, "ip", ["-6", "addr", "add", `${v6(2, 2)}/64`, "dev", "c0", "nodad"]);
  await inNs(w.client, "ip", ["-6", "route", "add", `fd01:${w.k}::/64`, "via", v6(2, 1)]);
  const ip6 = new Map<string, string>();
  for (const [name, ns, host] of [["p1", p1.ns, 0x10], ["plain", plain.ns, 0x20]] as const) {
    ip6.set(name, v6(1, host));
    await inNs(ns, "ip", ["-6", "addr", "add", `${v6(1, host)}/64`, "dev", "eth0", "nodad"]);
    await inNs(ns, "ip", ["-6", "addr", "add", "::6/128", "dev", "lo", "nodad"]);
    await inNs(ns, "ip", ["-6", "route", "add", "default", "via", v6(1, 1)]);
  }
  const pod6 = ip6.get("p1")!;
  await Deno.writeTextFile(
    w.daemonOpts.podsFile,
    podYaml("p1", { ip: p1.ip, ip6: pod6 }) + podYaml("plain", { meshed: false, ip: plain.ip }),
  );
  for (let i = 0; i < 100; i++) {
    using m = new PinnedDatapathMaps(w.pinPath);
    if (m.maps.pods().has(pod6)) break;
    await sleep(50);
  }
  {
    using m = new PinnedDatapathMaps(w.pinPath);
    assert.ok(m.maps.pods().has(pod6), "local_pods has the pod's IPv6");
    assert.ok(m.maps.pods().has(p1.ip), "and still its IPv4");
  }
  const sc = await sidecar(scope, w, p1.ns, true);
  const bytes = 1 << 20;
  const bulk = startNettool(scope, { netns: p1.ns, cgroup: w.cgroup, uid: 2000 }, [
    "bulk-server",
    "--bind",
    "::",
    "--port",
    "8080",
    "--bytes",
    String(bytes),
  ]);
  await bulk.waitFor((l) => l.event === "listening");
  const sink = startNettool(scope, { netns: p1.ns, cgroup: w.cgroup, uid: 2000 }, [
    "slow-sink",
    "--bind",
    "::",
    "--port",
    "7071",
    "--delay-ms",
    "0",
  ]);
  await sink.waitFor((l) => l.event === "listening");
  const before = (() => {
    using m = new PinnedDatapathMaps(w.pinPath);
    return m.maps.counters();
  })();
  for (const [who, ns] of [["another node", w.client], ["a plain pod on the same node", plain.ns]] as const) {
    const down = await nettool({ netns: ns }, ["bulk-client", `[${pod6}]:8080`, "--bytes", String(bytes)]);
    assert.equal(down.ok, true, `${who}: 1 MiB from the pod over IPv6 intact: ${JSON.stringify(down)}`);
    const up = await nettool({ netns: ns }, ["upload", `[${pod6}]:7071`, "--bytes", String(bytes)]);
    assert.equal(up.ok, true, `${who}: 1 MiB into the pod over IPv6 intact: ${JSON.stringify(up)}`);
  }
  assert.deepEqual(
    sc.lines.filter((l) => l.event === "loop"),
    [],
    "the inbound hop came back to the sidecar",
  );
  const acc = sc.lines.filter((l) => l.event === "accepted");
  assert.deepEqual(
    acc.map((l) => [l.kind, l.orig, l.orig_level]),
    [8080, 7071, 8080, 7071].map((port) => ["inbound", `${pod6}:${port}`, "ipv6"]),
    "every IPv6 connection reached the sidecar's inbound port, its original destination read at SOL_IPV6",
  );
  assert.deepEqual(
    acc.map((l) => String(l.peer).replace(/:\d+$/, "")),
    [v6(2, 2), v6(2, 2), ip6.get("plain"), ip6.get("plain")],
    "the sidecar sees each client's own IPv6",
  );
  let sent = 0;
  await bulk.waitFor((l) => l.event === "sent" && ++sent === 2, 2000, "the app's two downloads");
  const served = bulk.lines.filter((l) => l.event === "sent").map((l) => String(l.peer).replace(/:\d+$/, ""));
  assert.deepEqual(served, ["[::6]", "[::6]"], "the app saw the sidecar's IPv6 passthrough source");
  // An extension header before TCP is stepped over, not a reason to let the connection past the proxy.
  const ext = await nettool({ netns: w.client }, [
    "bulk-client",
    `[${pod6}]:8080`,
    "--bytes",
    String(bytes),
    "--ipv6-dstopts",
  ]);
  assert.equal(ext.ok, true, `with a destination options header: ${JSON.stringify(ext)}`);
  const extAcc = sc.lines.filter((l) => l.event === "accepted").slice(4);
  assert.deepEqual(extAcc.map((l) => [l.kind, l.orig]), [["inbound", `${pod6}:8080`]], "went to the sidecar");
  using m = new PinnedDatapathMaps(w.pinPath);
  const c = m.maps.counters();
  assert.ok(c.ingress_redirect > before.ingress_redirect, "the ingress program rewrote IPv6 packets");
  assert.ok(c.egress_restore > before.egress_restore, "and restored the replies' source port");
  // The pod's counters include its IPv6 inbound connections (an entry under each of its IPs).
  assert.ok((m.maps.podCounters(pod6)?.inbound ?? 0n) >= 5n, `pod counters: ${m.maps.podCounterIps()}`);
  // IPv4 to the same pod is still intercepted alongside.
  const down4 = await nettool({ netns: w.client }, [
    "bulk-client",
    `${p1.ip}:8080`,
    "--bytes",
    String(bytes),
  ]);
  assert.equal(down4.ok, true, JSON.stringify(down4));
  assert.equal(
    sc.lines.filter((l) => l.event === "accepted").length,
    6,
    "the IPv4 connection went inbound too",
  );
  // Records go with their connections.
  await sleep(300);
  assert.deepEqual(
    m.maps.pairs().filter((p) => p.key.sip.includes(":")),
    [],
    "no IPv6 record outlives its connection",
  );
}

Deno.test("kernel: inbound IPv6 via XDP, offload off: from another node and a same-node pod, 1 MiB each way intact", async () => {
  await inboundCase6([]);
});

Deno.test("kernel: inbound IPv6 via --ingress-hook=tc --hardware-checksum=true: checksums right with offload on", async () => {
  await inboundCase6(["--ingress-hook=tc", "--hardware-checksum=true"]);
});
