// A small Kubernetes API server for tests. It keeps pods with resourceVersions and an event history,
// and answers the calls the agent makes the way the real one does: paged lists with continue tokens,
// watches streamed as chunked JSON lines (with bookmarks, and a 410 ERROR event for a resourceVersion
// older than the history it keeps), single GETs, and Status objects for errors. Tests script the
// failures: queued HTTP errors, garbage lines, dropped or expired streams, a changed token.
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import type { Pod } from "kubernetes-types/core/v1.d.ts";
import type { Status } from "kubernetes-types/meta/v1.d.ts";

export interface FakeApiServerOptions {
  /** Bearer token required on every request; no check when undefined. */
  token?: string;
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: string; key: string };
  /**
   * Require client certificates signed by this CA (PEM); such a request needs no token. Needs `tls`.
   * Served through node:https, because Deno.serve cannot ask for client certificates.
   */
  clientCa?: string;
}

export type RequestKind = "list" | "watch" | "get" | "other";

export interface RecordedRequest {
  kind: RequestKind;
  path: string;
  params: URLSearchParams;
  authorization: string | null;
  /** Common name of the verified client certificate (mTLS only). */
  clientCn?: string;
  /** The answer's HTTP status. */
  status: number;
  /** performance.now() when the request arrived. */
  at: number;
}

interface Fault {
  status: number;
  reason: string;
  message: string;
}

interface HistoryEntry {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  pod: Pod;
}

interface Watcher {
  ctl: ReadableStreamDefaultController<Uint8Array>;
  node?: string;
  timer?: ReturnType<typeof setTimeout>;
  open: boolean;
}

const enc = new TextEncoder();

export class FakeApiServer {
  /** Accepted bearer token; tests change it to simulate rotation. */
  token: string | undefined;
  readonly requests: RecordedRequest[] = [];
  /** Called before each request is answered, to change the state at an exact point of a conversation. */
  beforeAnswer?: (kind: RequestKind, params: URLSearchParams) => void;
  /** End every watch right after its backlog, as a misbehaving proxy in front of the server might. */
  endWatchesAtOnce = false;
  readonly url: string;
  readonly #pods = new Map<string, Pod>();
  readonly #history: HistoryEntry[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #faults: Record<"list" | "watch" | "get", Fault[]> = { list: [], watch: [], get: [] };
  readonly #snapshots = new Map<string, Pod[]>();
  #rv = 100;
  /** Watches from a resourceVersion below this get 410: the history before it is forgotten. */
  #oldestRv = 100;
  #nextUid = 1;
  #nextSnapshot = 1;
  #deno?: Deno.HttpServer<Deno.NetAddr>;
  #node?: https.Server;

  private constructor(opts: FakeApiServerOptions, url: string) {
    this.token = opts.token;
    this.url = url;
  }

  static async start(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    if (opts.clientCa) {
      if (!opts.tls) throw new Error("fake API server: clientCa needs tls");
      const srv = https.createServer({
        cert: opts.tls.cert,
        key: opts.tls.key,
        ca: opts.clientCa,
        requestCert: true,
        rejectUnauthorized: true,
      });
      await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve()));
      const { port } = srv.address() as { port: number };
      const fake = new FakeApiServer(opts, `https://127.0.0.1:${port}`);
      fake.#node = srv;
      srv.on("request", (req: IncomingMessage, res: ServerResponse) => void fake.#nodeRequest(req, res));
      return fake;
    }
    const ready = Promise.withResolvers<number>();
    // The URL needs the port, known only once listening; requests cannot arrive before that.
    const self: { fake?: FakeApiServer } = {};
    const handler = (req: Request) => self.fake!.#handle(req);
    const common = {
      hostname: "127.0.0.1",
      port: 0,
      onListen: (a: Deno.NetAddr) => ready.resolve(a.port),
      onError: (e: unknown) => new Response(String(e), { status: 500 }),
    };
    const server = opts.tls
      ? Deno.serve({ ...common, cert: opts.tls.cert, key: opts.tls.key }, handler)
      : Deno.serve(common, handler);
    const port = await ready.promise;
    const fake = new FakeApiServer(opts, `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`);
    fake.#deno = server;
    self.fake = fake;
    return fake;
  }

  /** The current resourceVersion of the collection. */
  get resourceVersion(): string {
    return String(this.#rv);
  }

  /** Watch streams currently open. */
  get openWatches(): number {
    return this.#watchers.size;
  }

  requestsOf(kind: RequestKind): RecordedRequest[] {
    return this.requests.filter((r) => r.kind === kind);
  }

  // ---- state ----

  pods(): Pod[] {
    return [...this.#pods.values()];
  }

  /** Creates a pod (uid and resourceVersion assigned) and tells the watches. */
  addPod(pod: Pod): Pod {
    const key = keyOf(pod);
    if (this.#pods.has(key)) throw new Error(`fake API server: pod ${key} exists`);
    const stored: Pod = structuredClone(pod);
    stored.metadata = {
      namespace: "default",
      ...stored.metadata,
      uid: stored.metadata?.uid ?? `uid-${this.#nextUid++}`,
      resourceVersion: String(++this.#rv),
    };
    this.#pods.set(key, stored);
    this.#record("ADDED", stored);
    return stored;
  }

  /** Changes a pod through `mutate` and tells the watches. */
  updatePod(namespace: string, name: string, mutate: (p: Pod) => void): Pod {
    const key = `${namespace}/${name}`;
    const cur = this.#pods.get(key);
    if (!cur) throw new Error(`fake API server: no pod ${key}`);
    const next = structuredClone(cur);
    mutate(next);
    next.metadata = { ...next.metadata, resourceVersion: String(++this.#rv) };
    this.#pods.set(key, next);
    this.#record("MODIFIED", next);
    return next;
  }

  deletePod(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const cur = this.#pods.get(key);
    if (!cur) throw new Error(`fake API server: no pod ${key}`);
    this.#pods.delete(key);
    const gone = structuredClone(cur);
    gone.metadata = { ...gone.metadata, resourceVersion: String(++this.#rv) };
    this.#record("DELETED", gone);
  }

  /**
   * Moves the collection's resourceVersion on without a change visible to the watches (changes to
   * other nodes' pods do that) and returns it: only a BOOKMARK can tell a watcher about it.
   */
  advance(by = 1): string {
    this.#rv += by;
    return this.resourceVersion;
  }

  /** Forgets the history up to now: watches from an older resourceVersion get 410 Expired. */
  compact(): void {
    this.#oldestRv = this.#rv;
    this.#history.length = 0;
  }

  /** Makes the continue tokens handed out so far expire (410 on the next page). */
  expireContinueTokens(): void {
    this.#snapshots.clear();
  }

  // ---- scripting open watches ----

  /** Sends a BOOKMARK at the current resourceVersion to every open watch. */
  bookmark(): void {
    const ev = {
      type: "BOOKMARK",
      object: { kind: "Pod", apiVersion: "v1", metadata: { resourceVersion: this.resourceVersion } },
    };
    for (const w of this.#watchers) send(w, JSON.stringify(ev) + "\n");
  }

  /** Writes raw text into every open watch. */
  sendRaw(text: string): void {
    for (const w of this.#watchers) send(w, text);
  }

  /** Cuts every open watch mid-stream (no terminating chunk), as a dropped connection would. */
  dropWatches(): void {
    for (const w of [...this.#watchers]) this.#endWatch(w, new Error("connection dropped by the test"));
  }

  /** Ends every open watch cleanly, as the server's timeoutSeconds does. */
  endWatches(): void {
    for (const w of [...this.#watchers]) this.#endWatch(w);
  }

  /** Sends a 410 Expired ERROR event to every open watch and ends it. */
  expireWatches(): void {
    for (const w of [...this.#watchers]) {
      send(w, JSON.stringify({ type: "ERROR", object: expiredStatus("too old resource version") }) + "\n");
      this.#endWatch(w);
    }
  }

  /** The next `count` requests of `kind` are answered with `status` and a Status object. */
  failNext(kind: "list" | "watch" | "get", status: number, count = 1, message?: string): void {
    for (let i = 0; i < count; i++) {
      this.#faults[kind].push({ status, reason: reasonOf(status), message: message ?? `injected ${status}` });
    }
  }

  async close(): Promise<void> {
    this.endWatches();
    if (this.#deno) await this.#deno.shutdown();
    if (this.#node) {
      const srv = this.#node;
      await new Promise<void>((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      });
    }
  }

  // ---- protocol ----

  #handle(req: Request, clientCn?: string): Response {
    const url = new URL(req.url);
    const params = url.searchParams;
    const path = url.pathname;
    const watch = params.get("watch");
    const kind: RequestKind = path === "/api/v1/pods"
      ? (watch === "true" || watch === "1" ? "watch" : "list")
      : /^\/api\/v1\/namespaces\/[^/]+\/pods\/[^/]+$/.test(path)
      ? "get"
      : "other";
    const authorization = req.headers.get("authorization");
    const at = performance.now();
    const answer = (res: Response) => {
      this.requests.push({ kind, path, params, authorization, clientCn, status: res.status, at });
      return res;
    };
    if (req.method !== "GET") {
      return answer(statusResponse(405, "MethodNotAllowed", `${req.method} is not served`));
    }
    if (!clientCn && this.token !== undefined && authorization !== `Bearer ${this.token}`) {
      return answer(statusResponse(401, "Unauthorized", "Unauthorized"));
    }
    if (kind === "other") return answer(statusResponse(404, "NotFound", `${path} is not served`));
    this.beforeAnswer?.(kind, params);
    const fault = this.#faults[kind].shift();
    if (fault) return answer(statusResponse(fault.status, fault.reason, fault.message));
    let node: string | undefined;
    const selector = params.get("fieldSelector");
    if (selector) {
      const m = /^spec\.nodeName==?(.*)$/.exec(selector);
      if (!m) return answer(statusResponse(400, "BadRequest", `field selector ${selector} is not supported`));
      node = m[1];
    }
    if (kind === "get") return answer(this.#get(path));
    if (kind === "list") return answer(this.#list(params, node));
    return answer(this.#watch(params, node));
  }

  #get(path: string): Response {
    const [, , , , ns, , name] = path.split("/");
    const pod = this.#pods.get(`${decodeURIComponent(ns!)}/${decodeURIComponent(name!)}`);
    if (!pod) return statusResponse(404, "NotFound", `pods "${name}" not found`);
    return json(200, pod);
  }

  #list(params: URLSearchParams, node: string | undefined): Response {
    const limit = Number(params.get("limit") ?? "0");
    const cont = params.get("continue");
    let items: Pod[];
    let rv: string;
    let offset = 0;
    let snapshotId: string;
    if (cont) {
      let token: { id: string; offset: number; rv: string };
      try {
        token = JSON.parse(atob(cont));
      } catch {
        return statusResponse(400, "BadRequest", "continue token is not valid");
      }
      const snap = this.#snapshots.get(token.id);
      if (!snap) {
        return statusResponse(
          410,
          "Expired",
          "The provided continue parameter is too old to display a consistent list result.",
        );
      }
      items = snap;
      offset = token.offset;
      rv = token.rv;
      snapshotId = token.id;
    } else {
      items = this.pods()
        .filter((p) => node === undefined || p.spec?.nodeName === node)
        .sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
      rv = this.resourceVersion;
      snapshotId = String(this.#nextSnapshot++);
    }
    const end = limit > 0 ? Math.min(items.length, offset + limit) : items.length;
    const metadata: Record<string, string> = { resourceVersion: rv };
    if (end < items.length) {
      this.#snapshots.set(snapshotId, items);
      metadata.continue = btoa(JSON.stringify({ id: snapshotId, offset: end, rv }));
    }
    return json(200, { kind: "PodList", apiVersion: "v1", metadata, items: items.slice(offset, end) });
  }

  #watch(params: URLSearchParams, node: string | undefined): Response {
    const from = params.get("resourceVersion") ?? "";
    const timeoutSeconds = Number(params.get("timeoutSeconds") ?? "0");
    const fromRv = Number(from);
    const backlog: string[] = [];
    if (from === "" || from === "0") {
      // Without a resourceVersion a watch starts with the current state as ADDED events.
      for (const p of this.#pods.values()) {
        if (node === undefined || p.spec?.nodeName === node) backlog.push(eventLine("ADDED", p));
      }
    } else if (!Number.isInteger(fromRv)) {
      return statusResponse(400, "BadRequest", `resourceVersion ${from} is not valid`);
    } else if (fromRv < this.#oldestRv) {
      backlog.push(
        JSON.stringify({
          type: "ERROR",
          object: expiredStatus(`too old resource version: ${from} (${this.#oldestRv})`),
        }) + "\n",
      );
      const body = new ReadableStream<Uint8Array>({
        start(ctl) {
          ctl.enqueue(enc.encode(backlog[0]!));
          ctl.close();
        },
      });
      return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
    } else {
      for (const h of this.#history) {
        if (h.rv > fromRv && (node === undefined || h.pod.spec?.nodeName === node)) {
          backlog.push(eventLine(h.type, h.pod));
        }
      }
    }
    let watcher: Watcher;
    const body = new ReadableStream<Uint8Array>({
      start: (ctl) => {
        watcher = { ctl, node, open: true };
        this.#watchers.add(watcher);
        for (const line of backlog) send(watcher, line);
        if (this.endWatchesAtOnce) return this.#endWatch(watcher);
        if (timeoutSeconds > 0) {
          watcher.timer = setTimeout(() => this.#endWatch(watcher), timeoutSeconds * 1000);
        }
      },
      cancel: () => this.#forget(watcher),
    });
    return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
  }

  #record(type: HistoryEntry["type"], pod: Pod): void {
    this.#history.push({ rv: this.#rv, type, pod });
    for (const w of this.#watchers) {
      if (w.node === undefined || pod.spec?.nodeName === w.node) send(w, eventLine(type, pod));
    }
  }

  #endWatch(w: Watcher, error?: Error): void {
    if (!w.open) return;
    this.#forget(w);
    try {
      if (error) w.ctl.error(error);
      else w.ctl.close();
    } catch { /* the client went away first */ }
  }

  #forget(w: Watcher): void {
    w.open = false;
    clearTimeout(w.timer);
    this.#watchers.delete(w);
  }

  async #nodeRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) {
      if (typeof v === "string") headers.set(k, v);
    }
    const cn = (req.socket as TLSSocket).getPeerCertificate?.()?.subject?.CN;
    const response = this.#handle(
      new Request(`${this.url}${req.url}`, { headers }),
      typeof cn === "string" ? cn : undefined,
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    if (!response.body) {
      res.end();
      return;
    }
    const reader = response.body.getReader();
    res.on("close", () => void reader.cancel().catch(() => {}));
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        res.write(value);
      }
      res.end();
    } catch {
      res.destroy();
    }
  }
}

/** A pod of `node` with an IP, for tests. */
export function makePod(
  name: string,
  opts: { namespace?: string; node?: string; ip?: string; annotations?: Record<string, string> } = {},
): Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: opts.namespace ?? "default", annotations: opts.annotations },
    spec: { nodeName: opts.node ?? "node-a", containers: [{ name: "app", image: "app:1" }] },
    status: { phase: "Running", podIP: opts.ip ?? "10.0.0.1" },
  };
}

/** Polls `cond` until it holds; throws naming `what` after `timeoutMs`. */
export async function waitUntil(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function keyOf(p: Pod): string {
  return `${p.metadata?.namespace ?? "default"}/${p.metadata?.name}`;
}

function send(w: Watcher, text: string): void {
  if (!w.open) return;
  try {
    w.ctl.enqueue(enc.encode(text));
  } catch { /* the client went away */ }
}

function eventLine(type: string, pod: Pod): string {
  return JSON.stringify({ type, object: pod }) + "\n";
}

function expiredStatus(message: string): Status {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason: "Expired",
    code: 410,
  };
}

function reasonOf(status: number): string {
  return ({
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
  } as Record<number, string>)[status] ?? "Unknown";
}

function statusResponse(code: number, reason: string, message: string): Response {
  const body: Status = {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    code,
  };
  return json(code, body);
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Files in `dir` holding the same PEM texts. */
  files: { caCert: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string };
}

/**
 * Generates with openssl a CA, a server certificate for 127.0.0.1 and localhost, and a client
 * certificate with CN `clientCn`, all signed by that CA and valid for a day, into `dir`.
 */
export async function makeTestPki(dir: string, clientCn = "system:node:node-a"): Promise<TestPki> {
  const run = async (...args: string[]) => {
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "piped", stderr: "piped" }).output();
    } catch (e) {
      throw new Error(`openssl could not be run (is it installed?): ${(e as Error).message}`);
    }
    if (!out.success) {
      throw new Error(`openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "1",
    "-subj",
    "/CN=merbridge-test-ca",
  );
  await Deno.writeTextFile(
    `${dir}/server.ext`,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  await Deno.writeTextFile(`${dir}/client.ext`, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  for (const [name, subject] of [["server", "/CN=kube-apiserver"], ["client", `/CN=${clientCn}`]] as const) {
    await run("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
    await run(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "1",
      "-extfile",
      `${name}.ext`,
    );
  }
  const files = {
    caCert: `${dir}/ca.crt`,
    serverCert: `${dir}/server.crt`,
    serverKey: `${dir}/server.key`,
    clientCert: `${dir}/client.crt`,
    clientKey: `${dir}/client.key`,
  };
  const read = (p: string) => Deno.readTextFile(p);
  return {
    dir,
    caCert: await read(files.caCert),
    serverCert: await read(files.serverCert),
    serverKey: await read(files.serverKey),
    clientCert: await read(files.clientCert),
    clientKey: await read(files.clientKey),
    files,
  };
}

/** An API server over TLS taking one bearer token, with its CA; closed with `scope`. */
export async function startTlsApiServer(
  scope: { defer(f: () => unknown): void },
  dir: string,
  token: string,
): Promise<{ api: FakeApiServer; pki: TestPki }> {
  const pki = await makeTestPki(dir);
  const api = await FakeApiServer.start({ token, tls: { cert: pki.serverCert, key: pki.serverKey } });
  scope.defer(() => api.close());
  return { api, pki };
}

/**
 * What the kubelet mounts into the agent's pod, a token and the cluster's CA, under `dir`, and the
 * environment that leads the agent to `api`: for `--service-account-dir` and a daemon's `env`.
 */
export async function serviceAccountMount(
  dir: string,
  api: FakeApiServer,
  pki: TestPki,
  token: string,
): Promise<{ dir: string; env: Record<string, string> }> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/token`, token);
  await Deno.copyFile(pki.files.caCert, `${dir}/ca.crt`);
  return {
    dir,
    env: { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: new URL(api.url).port },
  };
}
