// Real clients through the mesh: the JDK's HttpURLConnection, curl, Python's blocking urllib and
// Node's http, each GETting and POSTing 1 MiB from a meshed pod's app to an HTTP server in another pod,
// plus a Python AF_INET6 socket to a v4-mapped address. Every byte must arrive intact, every
// connection the server saw must be one the sidecar made (a client that bypasses the mesh shows up as
// a server peer no sidecar upstream socket had), and the server must see the pod's IP.
// The JDK uses AF_INET6 dual-stack sockets by default (::ffff:a.b.c.d): it is intercepted only with
// connect6 handling v4-mapped destinations.
// Matrix: fast path on and off; the pod known by its mark listener or by its namespace cookie alone.
import assert from "node:assert/strict";
import {
  APP_UID,
  createWorld,
  nettool,
  type Proc,
  ROOT,
  Scope,
  spawn,
  type SpawnOptions,
  startNettool,
  type World,
} from "../../testbed/mod.ts";

const MIB = 1 << 20;
const HTTP_PORT = 8080;
const ECHO_PORT = 9090;

type Line = Record<string, unknown>;

/** The tools a test uid must read: copied out of a checkout it may not be able to enter. */
const TOOLS: string = (() => {
  const dir = Deno.makeTempDirSync({ prefix: `merbridge-clients-${Deno.pid}-` });
  Deno.chmodSync(dir, 0o777);
  for (const f of ["HttpClient.java", "http_client.mjs"]) {
    Deno.copyFileSync(`${ROOT}tests/tools/${f}`, `${dir}/${f}`);
    Deno.chmodSync(`${dir}/${f}`, 0o644);
  }
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  return dir;
})();

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Runs a client to its end (killed after `ms`); its stdout lines and exit code. */
async function runClient(argv: string[], opts: SpawnOptions, ms = 30_000) {
  await using scope = new Scope();
  const p: Proc = spawn(scope, argv[0]!, argv.slice(1), opts);
  const timedOut = !(await p.finish(ms));
  const st = await p.done;
  return { code: timedOut ? -1 : st.code, lines: p.lines, stderr: p.stderr.join("\n") };
}

/** What every HTTP client reports, whatever its language. */
interface HttpResult {
  client: string;
  error?: string;
  get?: { status: number; received: number; sha256: string };
  post?: { status: number; sent: number; sha256: string; reply: { received: number; sha256: string } };
}

async function lastJson(argv: string[], opts: SpawnOptions): Promise<HttpResult> {
  const r = await runClient(argv, opts);
  const last = r.lines.at(-1);
  if (!last || "raw" in last) {
    return {
      client: argv[0]!,
      error: `exit ${r.code}, no result line: ${JSON.stringify(r.lines)} ${r.stderr}`,
    };
  }
  return last as unknown as HttpResult;
}

/** curl has no JSON output of its own for the body: it writes files, the test hashes them. */
async function curl(base: string, opts: SpawnOptions, extra: string[] = []): Promise<HttpResult> {
  const dir = Deno.makeTempDirSync({ dir: TOOLS, prefix: "curl-" });
  Deno.chmodSync(dir, 0o777);
  try {
    const body = new Uint8Array(MIB);
    // getRandomValues fills at most 64 KiB at a time.
    for (let off = 0; off < MIB; off += 65536) crypto.getRandomValues(body.subarray(off, off + 65536));
    Deno.writeFileSync(`${dir}/up`, body, { mode: 0o644 });
    const common = ["-sS", "--fail", "--max-time", "20", "-w", "%{json}", ...extra];
    const get = await runClient(["curl", ...common, "-o", `${dir}/down`, `${base}/bytes/${MIB}`], opts);
    if (get.code !== 0) return { client: "curl", error: `GET: exit ${get.code}: ${get.stderr}` };
    const down = Deno.readFileSync(`${dir}/down`);
    const gw = get.lines.at(-1)!;
    const post = await runClient([
      "curl",
      ...common,
      "-H",
      "Content-Type: application/octet-stream",
      "--data-binary",
      `@${dir}/up`,
      "-o",
      `${dir}/reply`,
      `${base}/sha256`,
    ], opts);
    if (post.code !== 0) return { client: "curl", error: `POST: exit ${post.code}: ${post.stderr}` };
    const pw = post.lines.at(-1)!;
    return {
      client: "curl",
      get: { status: Number(gw.http_code), received: down.length, sha256: await sha256(down) },
      post: {
        status: Number(pw.http_code),
        sent: body.length,
        sha256: await sha256(body),
        reply: JSON.parse(Deno.readTextFileSync(`${dir}/reply`)),
      },
    };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

const CLIENTS: Record<string, (base: string, opts: SpawnOptions) => Promise<HttpResult>> = {
  "JDK 17 HttpURLConnection": (base, opts) =>
    lastJson(
      ["java", "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1", `${TOOLS}/HttpClient.java`, base, String(MIB)],
      opts,
    ),
  curl,
  "Python urllib (blocking)": (base, opts) =>
    nettool(opts, ["http-client", base, "--bytes", String(MIB)]) as Promise<unknown> as Promise<HttpResult>,
  "Node http": (base, opts) => lastJson(["node", `${TOOLS}/http_client.mjs`, base, String(MIB)], opts),
};

/** The same clients over native IPv6, each told to prefer it the way its users would. */
const CLIENTS6: Record<string, (base: string, opts: SpawnOptions) => Promise<HttpResult>> = {
  "JDK 17 HttpURLConnection, java.net.preferIPv6Addresses=true": (base, opts) =>
    lastJson(
      [
        "java",
        "-XX:-UsePerfData",
        "-XX:TieredStopAtLevel=1",
        "-Djava.net.preferIPv6Addresses=true",
        `${TOOLS}/HttpClient.java`,
        base,
        String(MIB),
      ],
      opts,
    ),
  "curl -6": (base, opts) => curl(base, opts, ["-6"]),
  "Python urllib (blocking)": CLIENTS["Python urllib (blocking)"]!,
  "Node http": CLIENTS["Node http"]!,
};

async function settle(pred: () => boolean, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!pred() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

const ipOf = (addr: unknown) => String(addr ?? "").replace(/:\d+$/, "");

async function httpCase(w: World, server: Proc, name: string, sockmap: boolean, v6 = false) {
  const a = w.pods.a!, r = w.pods.r!;
  // The sidecar writes IPv6 addresses unbracketed before the port, as it reads them.
  const podIp = v6 ? a.ip6! : a.ip, dstIp = v6 ? r.ip6! : r.ip;
  const sc = w.sidecars.a!;
  const from = sc.lines.length, srvFrom = server.lines.length;
  const opts = { netns: a.ns, cgroup: w.cgroup, uid: APP_UID };
  const before = w.dp.maps.counters();
  const res = await (v6 ? CLIENTS6 : CLIENTS)[name]!(
    v6 ? `http://[${dstIp}]:${HTTP_PORT}` : `http://${dstIp}:${HTTP_PORT}`,
    opts,
  );
  const after = w.dp.maps.counters();
  const requests = () => server.lines.slice(srvFrom).filter((l) => l.event === "request");
  await settle(() => requests().length >= 2);
  const serverPeers = [...new Set(requests().map((l) => String(l.peer)))].sort();
  const upstreams = () =>
    sc.lines.slice(from).filter((l) => l.event === "upstream" && l.target === `${dstIp}:${HTTP_PORT}`);
  await settle(() => upstreams().length >= serverPeers.length);
  const seen = `client: ${JSON.stringify(res)}; server: ${JSON.stringify(requests())}; sidecar: ${
    JSON.stringify(sc.lines.slice(from).filter((l) => l.event !== "closed"))
  }`;

  assert.equal(res.error, undefined, `${name} failed: ${seen}`);
  const get = requests().find((l) => l.method === "GET");
  assert.equal(res.get?.status, 200, seen);
  assert.equal(res.get?.received, MIB, `${name}: 1 MiB down: ${seen}`);
  assert.equal(res.get?.sha256, get?.sha256, `${name}: the download arrived intact`);
  assert.equal(res.post?.status, 200, seen);
  assert.equal(res.post?.reply.received, MIB, `${name}: 1 MiB up: ${seen}`);
  assert.equal(res.post?.reply.sha256, res.post?.sha256, `${name}: the upload arrived intact`);

  assert.deepEqual(w.loops("a", from), [], seen);
  const sources = upstreams().map((l) => String(l.source)).sort();
  assert.ok(serverPeers.length >= 1, seen);
  assert.deepEqual(
    serverPeers.filter((p) => !sources.includes(p)),
    [],
    `${name}: connections the server saw that a's sidecar never made: the client bypassed the mesh. ${seen}`,
  );
  assert.deepEqual(
    sources,
    serverPeers,
    `${name}: every upstream connection of the sidecar reached the server`,
  );
  const acc = w.accepted("a", from);
  assert.equal(acc.length, serverPeers.length, `one accept per connection: ${seen}`);
  for (const l of acc) {
    assert.equal(l.kind, "outbound");
    assert.equal(l.orig, `${dstIp}:${HTTP_PORT}`, "the sidecar read the original destination");
    assert.equal(ipOf(l.peer), podIp, "the app's redirected socket was bound to the pod IP");
  }
  assert.deepEqual(serverPeers.map(ipOf), serverPeers.map(() => podIp), "the server saw the pod IP");
  assertFastPath(sockmap, before, after, name);
}

/** The bytes between the app and its sidecar took the fast path exactly when it is on. */
function assertFastPath(
  on: boolean,
  before: Record<string, bigint>,
  after: Record<string, bigint>,
  name: string,
) {
  const d = (k: string) => after[k]! - before[k]!;
  const got = `sockmap_add +${d("sockmap_add")}, msg_redirect +${d("msg_redirect")}`;
  if (on) assert.ok(d("sockmap_add") > 0n && d("msg_redirect") > 0n, `${name}: fast path used: ${got}`);
  else assert.ok(d("sockmap_add") === 0n && d("msg_redirect") === 0n, `${name}: fast path unused: ${got}`);
}

for (const sockmap of [true, false]) {
  for (const identity of ["mark", "netns"] as const) {
    const label = `fast path ${sockmap ? "on" : "off"}, pod known by ${
      identity === "mark" ? "its mark listener" : "its namespace cookie alone"
    }`;
    Deno.test(`kernel: real clients through the mesh, 1 MiB each way intact and seen by the sidecar (${label})`, async (t) => {
      await using scope = new Scope();
      const w = await createWorld(scope, { meshed: ["a"], outside: { r: [ECHO_PORT] }, sockmap });
      if (identity === "mark") w.identify("a");
      else w.identifyByNetns("a");
      const server = startNettool(scope, { netns: w.pods.r!.ns }, [
        "http-server",
        "--port",
        String(HTTP_PORT),
      ]);
      await server.waitFor((l) => l.event === "listening", 5000, "http server");

      for (const name of Object.keys(CLIENTS)) {
        await t.step(name, () => httpCase(w, server, name, sockmap));
      }

      await t.step("Python AF_INET6 socket to ::ffff:<ip>", async () => {
        const a = w.pods.a!, r = w.pods.r!;
        const from = w.sidecars.a!.lines.length;
        const before = w.dp.maps.counters();
        const res: Line = await nettool({ netns: a.ns, cgroup: w.cgroup, uid: APP_UID }, [
          "client",
          "--family",
          "inet6",
          `[::ffff:${r.ip}]:${ECHO_PORT}`,
          "--bytes",
          String(MIB),
          "--timeout",
          "10",
        ]);
        const seen = `client: ${JSON.stringify(res)}; sidecar: ${
          JSON.stringify(w.sidecars.a!.lines.slice(from))
        }`;
        assert.equal(res.ok, true, seen);
        assert.equal(
          res.peer,
          `[::ffff:${r.ip}]:${ECHO_PORT}`,
          "getpeername answers the address the app asked for",
        );
        const acc = w.accepted("a", from);
        assert.equal(acc.length, 1, `the sidecar saw the AF_INET6 connection: ${seen}`);
        assert.equal(acc[0]!.orig, `${r.ip}:${ECHO_PORT}`);
        const up = w.sidecars.a!.lines.slice(from).filter((l) => l.event === "upstream");
        assert.equal((res.hello as Line).peer, up[0]?.source, "the server saw the sidecar's connection");
        assertFastPath(sockmap, before, w.dp.maps.counters(), "AF_INET6 socket");
      });
    });
  }
}

for (const sockmap of [true, false]) {
  Deno.test(`kernel: real clients over native IPv6 from a dual-stack pod, 1 MiB each way intact and seen by the sidecar (fast path ${sockmap ? "on" : "off"})`, async (t) => {
    await using scope = new Scope();
    const w = await createWorld(scope, { meshed: ["a"], outside: { r: [ECHO_PORT] }, sockmap, ipv6: true });
    w.identify("a");
    const server = startNettool(scope, { netns: w.pods.r!.ns }, [
      "http-server",
      "--bind",
      "::",
      "--port",
      String(HTTP_PORT),
    ]);
    await server.waitFor((l) => l.event === "listening", 5000, "http server");
    for (const name of Object.keys(CLIENTS6)) {
      await t.step(name, () => httpCase(w, server, name, sockmap, true));
    }
    // The same pod's IPv4 still goes the IPv4 way, through the same dual-stack sidecar.
    await t.step("curl over IPv4 beside it", () => httpCase(w, server, "curl", sockmap));
  });
}
