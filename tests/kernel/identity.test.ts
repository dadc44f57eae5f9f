// Pod identity without CNI mode, through the real daemon: it finds the pod's namespace by the IP the
// pods file gives, and the pod's connections then follow its annotations, skip the sidecar for its
// own IP and reach the sidecar from the pod IP. Deleting the pod, restarting the daemon and starting
// a pod while no daemon runs keep netns_pod_ips right.
import assert from "node:assert/strict";
import { PinnedDatapathMaps } from "../../src/datapath/datapath.ts";
import { meshParams } from "../../src/mesh/modes.ts";
import { readNetns } from "../../src/netns/discover.ts";
import {
  addIpv6,
  createNode,
  createPod,
  daemonHome,
  nettool,
  podYaml,
  run,
  Scope,
  sidecarReady,
  sleep,
  spawn,
  startDaemon,
  startNettool,
  startSidecar,
  stopDaemon,
  uniq,
  waitMaps,
} from "../../testbed/mod.ts";

const mesh = meshParams("istio");
const EXCLUDE = { "traffic.sidecar.istio.io/excludeOutboundPorts": "9090" };

function cookieOf(ns: string): bigint {
  return readNetns(`/run/netns/${ns}`).cookie;
}

/** Log lines reach us through a pipe, a little after the map write they follow. */
async function logged(p: { stderr: string[] }, ...parts: string[]): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!p.stderr.some((l) => parts.every((x) => l.includes(x)))) {
    if (Date.now() > deadline) {
      throw new Error(`no log line with ${parts.join(", ")}: ${p.stderr.join("\n")}`);
    }
    await sleep(20);
  }
}

function entries(pinPath: string): Map<bigint, string> {
  using m = new PinnedDatapathMaps(pinPath);
  return m.maps.netnsPods();
}

Deno.test("kernel: without CNI mode the daemon identifies pods by namespace cookie", async (t) => {
  await using scope = new Scope();
  const prefix = uniq();
  const node = await createNode(scope, prefix);
  const home = await daemonHome(scope, { prefix, name: "id" });
  const { cgroup, pinPath, podsFile } = home;
  const a = await createPod(scope, node, "a", 10);
  const r = await createPod(scope, node, "r", 100);
  const sc = startSidecar(scope, { netns: a.ns, cgroup, mesh });
  await sidecarReady(sc, ["outbound", "inbound"], 5000);
  for (const port of [8080, 9090]) {
    const s = startNettool(scope, { netns: r.ns }, ["server", "--name", "r", "--port", String(port)]);
    await s.waitFor((l) => l.event === "listening");
  }
  const self = startNettool(scope, { netns: a.ns, uid: 2000 }, [
    "server",
    "--name",
    "a-self",
    "--port",
    "8088",
  ]);
  await self.waitFor((l) => l.event === "listening");

  const podA = podYaml("a", { ip: a.ip, annotations: EXCLUDE });
  await Deno.writeTextFile(podsFile, podA);
  const opts = { ...home, extra: ["--cni-mode=false", "--netns-dirs=/run/netns"] };
  let daemon = await startDaemon(scope, opts);
  const cookieA = cookieOf(a.ns);
  const app = (target: string, args: string[] = []) =>
    nettool({ netns: a.ns, cgroup, uid: 1000 }, ["client", target, ...args]);
  const accepted = (from: number) => sc.lines.slice(from).filter((l) => l.event === "accepted");
  const ipRe = (ip: string) => new RegExp(`^${ip.replaceAll(".", "\\.")}:\\d+$`);

  await t.step("the pod's namespace cookie maps to its IP", async () => {
    await waitMaps(pinPath, (m) => m.maps.netnsPods().get(cookieA) === a.ip, 5000);
    await logged(daemon, "identified default/a", cookieA.toString());
  });

  await t.step("an excluded port goes direct, another reaches the sidecar from the pod IP", async () => {
    let from = sc.lines.length;
    const direct = await app(`${r.ip}:9090`);
    assert.equal(direct.ok, true, JSON.stringify(direct));
    assert.equal(accepted(from).length, 0, "the annotation applies: the sidecar never saw it");
    assert.match(String((direct.hello as Record<string, string>).peer), ipRe(a.ip));

    from = sc.lines.length;
    const via = await app(`${r.ip}:8080`);
    assert.equal(via.ok, true, JSON.stringify(via));
    const acc = accepted(from);
    assert.equal(acc.length, 1, JSON.stringify(acc));
    assert.equal(acc[0]!.orig, `${r.ip}:8080`);
    assert.match(String(acc[0]!.peer), ipRe(a.ip), "bpf_bind gave the redirected socket the pod IP");
  });

  await t.step("the same from AF_INET6 sockets to ::ffff:a.b.c.d", async () => {
    const v6 = ["--family", "inet6"];
    let from = sc.lines.length;
    const direct = await app(`[::ffff:${r.ip}]:9090`, v6);
    assert.equal(direct.ok, true, JSON.stringify(direct));
    assert.equal(accepted(from).length, 0);
    from = sc.lines.length;
    const via = await app(`[::ffff:${r.ip}]:8080`, v6);
    assert.equal(via.ok, true, JSON.stringify(via));
    const acc = accepted(from);
    assert.equal(acc.length, 1, JSON.stringify(acc));
    assert.match(String(acc[0]!.peer), new RegExp(`^(::ffff:)?${a.ip.replaceAll(".", "\\.")}:`));
    from = sc.lines.length;
    const own = await app(`[::ffff:${a.ip}]:8088`, v6);
    assert.equal((own.hello as Record<string, string>).server, "a-self", JSON.stringify(own));
    assert.equal(accepted(from).length, 0);
  });

  await t.step("the app calling its own pod IP goes direct", async () => {
    const from = sc.lines.length;
    const res = await app(`${a.ip}:8088`);
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.equal((res.hello as Record<string, string>).server, "a-self");
    assert.equal(accepted(from).length, 0);
  });

  await t.step("the pod deleted: its entry goes, and its own IP is redirected like any address", async () => {
    await Deno.writeTextFile(`${podsFile}.tmp`, "");
    await Deno.rename(`${podsFile}.tmp`, podsFile);
    await waitMaps(pinPath, (m) => !m.maps.netnsPods().has(cookieA), 5000);
    await logged(daemon, "unidentified default/a", "left the pod source");
    // What identification changed, seen from the other side: unknown, the pod gets no exemptions.
    const from = sc.lines.length;
    const res = await app(`${a.ip}:8088`);
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.equal(accepted(from).length, 1, "unidentified, the own IP goes to the sidecar");
  });

  await t.step("a daemon restart keeps the entry at every moment", async () => {
    await Deno.writeTextFile(`${podsFile}.tmp`, podA);
    await Deno.rename(`${podsFile}.tmp`, podsFile);
    await waitMaps(pinPath, (m) => m.maps.netnsPods().get(cookieA) === a.ip, 5000);
    let samples = 0, missing = 0, sampling = true;
    const sampler = (async () => {
      while (sampling) {
        if (entries(pinPath).get(cookieA) !== a.ip) missing++;
        samples++;
        await sleep(2);
      }
    })();
    assert.equal(await stopDaemon(daemon), 0);
    await sleep(300);
    daemon = await startDaemon(scope, opts);
    await sleep(1500); // the restarted daemon's first scan and a periodic one
    sampling = false;
    await sampler;
    assert.ok(samples >= 30, `only ${samples} samples`);
    assert.equal(missing, 0, `${missing} of ${samples} samples had no entry`);
    const res = await app(`${a.ip}:8088`);
    assert.equal((res.hello as Record<string, string>).server, "a-self", "still identified");
  });

  await t.step("a pod started while no daemon runs is identified when it starts", async () => {
    assert.equal(await stopDaemon(daemon), 0);
    const c = await createPod(scope, node, "c", 12);
    await Deno.writeTextFile(`${podsFile}.tmp`, podA + podYaml("c", { ip: c.ip }));
    await Deno.rename(`${podsFile}.tmp`, podsFile);
    const cookieC = cookieOf(c.ns);
    assert.equal(entries(pinPath).has(cookieC), false);
    daemon = await startDaemon(scope, opts);
    await waitMaps(pinPath, (m) => m.maps.netnsPods().get(cookieC) === c.ip, 5000);
    assert.equal(entries(pinPath).get(cookieA), a.ip);
  });

  await t.step("a namespace only a process holds (no netns file) is found through /proc", async () => {
    const holder = spawn(scope, "unshare", ["--net", "sleep", "300"]);
    let nsPath = "";
    for (let i = 0; i < 100 && !nsPath; i++) {
      const link = await Deno.readLink(`/proc/${holder.pid}/ns/net`).catch(() => "");
      if (link && link !== await Deno.readLink("/proc/self/ns/net")) nsPath = `/proc/${holder.pid}/ns/net`;
      else await sleep(20);
    }
    assert.ok(nsPath, "unshare made a namespace");
    const ip = `${node.subnet}.13`;
    const hostIf = `${prefix}dh`.slice(0, 15);
    await run("nsenter", [
      `--net=/run/netns/${node.ns}`,
      "--",
      "ip",
      "link",
      "add",
      hostIf,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      String(holder.pid),
    ]);
    await run("nsenter", [`--net=${nsPath}`, "--", "ip", "addr", "add", `${ip}/24`, "dev", "eth0"]);
    await Deno.writeTextFile(`${podsFile}.tmp`, podA + podYaml("d", { ip }));
    await Deno.rename(`${podsFile}.tmp`, podsFile);
    const cookieD = readNetns(nsPath).cookie;
    await waitMaps(pinPath, (m) => m.maps.netnsPods().get(cookieD) === ip, 5000);
    holder.kill();
    await holder.done;
    await waitMaps(pinPath, (m) => !m.maps.netnsPods().has(cookieD), 5000);
    await logged(daemon, "unidentified default/d", "namespace is gone");
  });

  await stopDaemon(daemon);
});

Deno.test("kernel: a dual-stack pod is identified by both IPs and keyed by each; its IPv6 follows its rules", async () => {
  await using scope = new Scope();
  const prefix = uniq();
  const node = await createNode(scope, prefix);
  const home = await daemonHome(scope, { prefix, name: "id6" });
  const { cgroup, pinPath, podsFile } = home;
  const a = await createPod(scope, node, "a", 10);
  const r = await createPod(scope, node, "r", 100);
  const a6 = await addIpv6(a, node), r6 = await addIpv6(r, node);
  const sc = startSidecar(scope, { netns: a.ns, cgroup, mesh, dualStack: true });
  await sidecarReady(sc, ["outbound", "inbound"], 5000);
  for (const port of [8080, 9090]) {
    const s = startNettool(scope, { netns: r.ns }, [
      "server",
      "--name",
      "r",
      "--bind",
      "::",
      "--port",
      `${port}`,
    ]);
    await s.waitFor((l) => l.event === "listening");
  }
  await Deno.writeTextFile(podsFile, podYaml("a", { ip: a.ip, ip6: a6, annotations: EXCLUDE }));
  await startDaemon(scope, { ...home, extra: ["--cni-mode=false", "--netns-dirs=/run/netns"] });
  const cookieA = cookieOf(a.ns);
  await waitMaps(pinPath, (m) => {
    const ids = m.maps.netnsPodIps().get(cookieA);
    return ids?.ip4 === a.ip && ids?.ip6 === a6;
  }, 5000);
  await waitMaps(pinPath, (m) => m.maps.pods().has(a.ip) && m.maps.pods().has(a6), 5000);
  const app = (target: string) =>
    nettool({ netns: a.ns, cgroup, uid: 1000 }, ["client", target, "--family", "inet6"]);
  let from = sc.lines.length;
  const via = await app(`[${r6}]:8080`);
  assert.equal(via.ok, true, JSON.stringify(via));
  const acc = sc.lines.slice(from).filter((l) => l.event === "accepted");
  assert.deepEqual(acc.map((l) => [l.kind, l.orig]), [["outbound", `${r6}:8080`]]);
  assert.equal(String(acc[0]!.peer).replace(/:\d+$/, ""), a6, "the sidecar sees the pod's IPv6");
  from = sc.lines.length;
  const direct = await app(`[${r6}]:9090`);
  assert.equal(direct.ok, true, JSON.stringify(direct));
  assert.equal(sc.lines.slice(from).filter((l) => l.event === "accepted").length, 0, "the pod's rules apply");
});
