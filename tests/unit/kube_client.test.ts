// The API client against the fake API server: paged lists, watch streams and their failure modes,
// typed errors, request deadlines, TLS with a CA-signed server certificate and client certificates.
// Also the two helpers it stands on: the line splitter and the retry backoff.
import assert from "node:assert/strict";
import { Backoff } from "../../src/kube/backoff.ts";
import { sleep } from "../../src/util/sleep.ts";
import {
  KubeApiError,
  KubeClient,
  KubeProtocolError,
  KubeRequestError,
  type PodWatchEvent,
} from "../../src/kube/client.ts";
import type { KubeConnection } from "../../src/kube/config.ts";
import { LineTooLongError, readLines } from "../../src/kube/json_lines.ts";
import type { TokenSource } from "../../src/kube/token.ts";
import {
  FakeApiServer,
  makePod,
  makeTestPki,
  type TestPki,
  waitUntil,
} from "../../testbed/fake_apiserver.ts";

const SELECTOR = "spec.nodeName=node-a";

class CountingToken implements TokenSource {
  readonly description = "test token";
  invalidations = 0;
  constructor(public value: string) {}
  token() {
    return Promise.resolve(this.value);
  }
  invalidate() {
    this.invalidations++;
  }
}

function conn(server: string, extra: Partial<KubeConnection> = {}): KubeConnection {
  return { server, insecureSkipTlsVerify: false, description: "test", ...extra };
}

/**
 * A stream handing out one chunk per read, then ending or failing, as a network body does. As a byte
 * stream (fetch bodies are), each chunk is copied into the reader's own buffer when it brings one,
 * and `filled` counts those reads.
 */
function streamOf(
  chunks: (Uint8Array | string)[],
  error?: Error,
  kind: "default" | "bytes" = "default",
): ReadableStream<Uint8Array> & { filled: number } {
  const enc = new TextEncoder();
  const queue = chunks.map((c) => typeof c === "string" ? enc.encode(c) : c);
  let filled = 0;
  const end = (ctl: ReadableStreamDefaultController<Uint8Array> | ReadableByteStreamController) => {
    if (error) ctl.error(error);
    else {
      ctl.close();
      (ctl as ReadableByteStreamController).byobRequest?.respond(0);
    }
  };
  const stream = kind === "default"
    ? new ReadableStream<Uint8Array>({
      pull(ctl) {
        const c = queue.shift();
        if (c !== undefined) ctl.enqueue(c);
        else end(ctl);
      },
    })
    : new ReadableStream({
      type: "bytes",
      pull(ctl) {
        const c = queue.shift();
        if (c === undefined) return end(ctl);
        const view = ctl.byobRequest?.view;
        if (!view) return ctl.enqueue(c);
        const n = Math.min(c.length, view.byteLength);
        new Uint8Array(view.buffer, view.byteOffset, n).set(c.subarray(0, n));
        if (n < c.length) queue.unshift(c.subarray(n));
        filled++;
        ctl.byobRequest!.respond(n);
      },
    });
  return Object.defineProperty(stream, "filled", { get: () => filled }) as ReadableStream<Uint8Array> & {
    filled: number;
  };
}

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const l of it) out.push(l);
  return out;
}

for (const kind of ["default", "bytes"] as const) {
  // The byte stream is read into the reader's own buffer, reused from chunk to chunk.
  const streamOfKind = (chunks: (Uint8Array | string)[], error?: Error) => {
    const s = streamOf(chunks, error, kind);
    made.push(s);
    return s;
  };
  const made: { filled: number }[] = [];
  Deno.test(`readLines (${kind} stream): lines cut anywhere by chunk boundaries come out whole`, async (t) => {
    await t.step("lines split across chunks, several per chunk, CRLF and blank lines", async () => {
      const lines = await collect(readLines(streamOfKind(['{"a":', '1}\n{"b":2}\r\n\n{"c"', ":3}\n"])));
      assert.deepEqual(lines, ['{"a":1}', '{"b":2}', '{"c":3}']);
    });

    await t.step("a multi-byte character cut between chunks", async () => {
      const bytes = new TextEncoder().encode('{"name":"püd-é"}\n');
      const cut = bytes.indexOf(0xc3) + 1; // inside the two bytes of ü
      const lines = await collect(readLines(streamOfKind([bytes.slice(0, cut), bytes.slice(cut)])));
      assert.deepEqual(lines, ['{"name":"püd-é"}']);
    });

    await t.step("a last line without a newline is kept when the stream ends cleanly", async () => {
      assert.deepEqual(await collect(readLines(streamOfKind(["x\ny"]))), ["x", "y"]);
    });

    await t.step("a line growing past the limit is refused", async () => {
      const seen: string[] = [];
      await assert.rejects(async () => {
        for await (const l of readLines(streamOfKind(["ok\n", "x".repeat(30), "y".repeat(30), "\n"]), 50)) {
          seen.push(l);
        }
      }, LineTooLongError);
      assert.deepEqual(seen, ["ok"]);
    });

    await t.step("a stream error reaches the caller after the complete lines", async () => {
      const seen: string[] = [];
      await assert.rejects(async () => {
        for await (const l of readLines(streamOfKind(["one\ntw"], new Error("reset")))) seen.push(l);
      }, /reset/);
      assert.deepEqual(seen, ["one"]);
    });
    if (kind === "bytes") {
      assert.ok(made.every((m) => m.filled > 0), "every byte stream was read into our buffer");
    }
  });
}

Deno.test("a fetch body is a byte stream, so readLines reads it into its own buffer", async () => {
  const chunks = Array.from({ length: 200 }, (_, i) => `{"i":${i}}\n`);
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const enc = new TextEncoder();
    let i = 0;
    return new Response(
      new ReadableStream({
        pull(ctl) {
          if (i === chunks.length) ctl.close();
          else ctl.enqueue(enc.encode(chunks[i++]!));
        },
      }),
    );
  });
  const url = `http://127.0.0.1:${server.addr.port}/`;
  // Without a reader of its own, each chunk would come in a fresh 64 KiB buffer.
  const probe = await fetch(url);
  probe.body!.getReader({ mode: "byob" }).releaseLock();
  await probe.body!.cancel();
  const lines = await collect(readLines((await fetch(url)).body!));
  assert.deepEqual(lines, chunks.map((c) => c.trim()));
});

Deno.test("Backoff doubles up to the ceiling, with jitter in the upper half", async (t) => {
  await t.step("lowest draw is half the ceiling, highest the ceiling", () => {
    const low = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => low.next()), [50, 100, 200, 400, 500, 500]);
    const high = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
    assert.deepEqual([1, 2, 3, 4, 5].map(() => high.next()), [100, 200, 400, 800, 1000]);
    assert.equal(high.failures, 5);
  });

  await t.step("reset starts over", () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
    b.next();
    b.next();
    b.reset();
    assert.equal(b.failures, 0);
    assert.equal(b.next(), 50);
  });

  await t.step("nonsense options are refused", () => {
    assert.throws(() => new Backoff({ initialMs: 0, maxMs: 10 }), RangeError);
    assert.throws(() => new Backoff({ initialMs: 100, maxMs: 10 }), /initialMs=100 maxMs=10/);
  });

  await t.step("sleep ends early on abort", async () => {
    const ctl = new AbortController();
    const t0 = performance.now();
    const p = sleep(10_000, ctl.signal);
    ctl.abort();
    await p;
    assert.ok(performance.now() - t0 < 1000);
  });
});

Deno.test("KubeClient against the fake API server", async (t) => {
  const server = await FakeApiServer.start({ token: "secret" });
  const token = new CountingToken("secret");
  const client = new KubeClient(conn(server.url, { token }), { requestTimeoutMs: 2000 });
  try {
    for (let i = 1; i <= 5; i++) server.addPod(makePod(`p${i}`, { ip: `10.0.0.${i}` }));
    server.addPod(makePod("elsewhere", { node: "node-b" }));

    await t.step(
      "a paged list follows continue tokens and keeps the first page's resourceVersion",
      async () => {
        const listRv = server.resourceVersion;
        const res = await client.listPods({ fieldSelector: SELECTOR, limit: 2 });
        assert.deepEqual(res.items.map((p) => p.metadata?.name), ["p1", "p2", "p3", "p4", "p5"]);
        assert.equal(res.resourceVersion, listRv);
        assert.equal(res.pages, 3);
        const lists = server.requestsOf("list");
        assert.equal(lists.length, 3);
        assert.equal(lists[0]!.params.get("fieldSelector"), SELECTOR);
        assert.equal(lists[0]!.params.get("limit"), "2");
        assert.equal(lists[0]!.params.has("continue"), false);
        assert.ok(lists[1]!.params.get("continue"));
        assert.equal(lists[0]!.authorization, "Bearer secret");
      },
    );

    await t.step("an expired continue token starts the list over and sees the newer state", async () => {
      let expired = false;
      server.beforeAnswer = (kind, params) => {
        if (kind === "list" && params.has("continue") && !expired) {
          expired = true;
          server.expireContinueTokens();
          server.addPod(makePod("p6"));
        }
      };
      try {
        const res = await client.listPods({ fieldSelector: SELECTOR, limit: 4 });
        assert.ok(expired, "the continue token was expired");
        assert.deepEqual(res.items.map((p) => p.metadata?.name), ["p1", "p2", "p3", "p4", "p5", "p6"]);
        assert.equal(res.resourceVersion, server.resourceVersion);
        assert.equal(res.pages, 2, "the pages of the second, complete list");
      } finally {
        server.beforeAnswer = undefined;
      }
    });

    await t.step("get returns the pod, and undefined for one that does not exist", async () => {
      const p = await client.getPod("default", "p3");
      assert.equal(p?.status?.podIP, "10.0.0.3");
      assert.equal(await client.getPod("default", "nope"), undefined);
      assert.equal(server.requestsOf("get").at(-1)?.path, "/api/v1/namespaces/default/pods/nope");
    });

    await t.step("HTTP errors come back typed, naming the call and the server's message", async () => {
      server.failNext("list", 500, 1, "etcdserver: request timed out");
      const e = await client.listPods({ fieldSelector: SELECTOR }).then(() => undefined, (e) => e);
      assert.ok(e instanceof KubeApiError);
      assert.equal(e.code, 500);
      assert.equal(e.reason, "InternalError");
      assert.equal(e.expired, false);
      assert.match(
        e.message,
        /GET \/api\/v1\/pods on http:\/\/127\.0\.0\.1:\d+: 500 .*etcdserver: request timed out/,
      );

      server.failNext("get", 403, 1, 'pods "p1" is forbidden');
      await assert.rejects(
        client.getPod("default", "p1"),
        (e: unknown) => e instanceof KubeApiError && e.code === 403,
      );
    });

    await t.step("a refused token is reported as 401 and dropped from the cache", async () => {
      const before = token.invalidations;
      server.token = "rotated";
      const e = await client.listPods({}).then(() => undefined, (e) => e);
      server.token = "secret";
      assert.ok(e instanceof KubeApiError);
      assert.equal(e.code, 401);
      assert.equal(token.invalidations, before + 1);
    });

    await t.step("a watch streams typed events from the resourceVersion given, with bookmarks", async () => {
      const from = server.resourceVersion;
      server.updatePod("default", "p1", (p) => p.metadata!.labels = { v: "2" });
      const events: PodWatchEvent[] = [];
      const watch = client.watchPods({ fieldSelector: SELECTOR, resourceVersion: from, timeoutSeconds: 30 });
      for await (const ev of watch) {
        events.push(ev);
        if (events.length === 1) {
          server.deletePod("default", "p2");
          server.addPod(makePod("elsewhere-2", { node: "node-b" })); // filtered out by the selector
          server.bookmark();
        }
        if (ev.type === "BOOKMARK") break;
      }
      assert.deepEqual(events.map((e) => [e.type, e.object.metadata?.name]), [
        ["MODIFIED", "p1"],
        ["DELETED", "p2"],
        ["BOOKMARK", undefined],
      ]);
      assert.equal(events[2]!.object.metadata?.resourceVersion, server.resourceVersion);
      const req = server.requestsOf("watch").at(-1)!;
      assert.equal(req.params.get("resourceVersion"), from);
      assert.equal(req.params.get("allowWatchBookmarks"), "true");
      assert.equal(req.params.get("timeoutSeconds"), "30");
      assert.equal(req.params.get("fieldSelector"), SELECTOR);
      await waitUntil(() => server.openWatches === 0, "leaving the loop to close the stream");
    });

    await t.step("a watch from a forgotten resourceVersion throws an expired KubeApiError", async () => {
      const old = server.resourceVersion;
      server.addPod(makePod("p7"));
      server.compact();
      const e = await drain(client.watchPods({ resourceVersion: old })).then(() => undefined, (e) => e);
      assert.ok(e instanceof KubeApiError);
      assert.equal(e.code, 410);
      assert.equal(e.expired, true);
      assert.match(e.message, /ERROR event 410 Expired: too old resource version/);
    });

    await t.step("a garbage line and an unknown event type are protocol errors", async () => {
      const { done: got } = await opened(
        server,
        client.watchPods({ resourceVersion: server.resourceVersion }),
      );
      server.sendRaw("<html>proxy error</html>\n");
      const e = await got.then(() => undefined, (e) => e);
      assert.ok(e instanceof KubeProtocolError);
      assert.match(e.message, /a line that is not JSON: <html>proxy error<\/html>/);

      const { done: got2 } = await opened(
        server,
        client.watchPods({ resourceVersion: server.resourceVersion }),
      );
      server.sendRaw('{"type":"SURPRISE","object":{}}\n');
      await assert.rejects(got2, /unknown event type "SURPRISE"/);
    });

    await t.step("a connection dropped mid-stream is a KubeRequestError", async () => {
      const { done: got } = await opened(
        server,
        client.watchPods({ resourceVersion: server.resourceVersion }),
      );
      server.dropWatches();
      await assert.rejects(got, KubeRequestError);
    });

    await t.step("a clean end of the stream ends the iteration without error", async () => {
      const { done: got } = await opened(
        server,
        client.watchPods({ resourceVersion: server.resourceVersion }),
      );
      server.addPod(makePod("p8"));
      server.endWatches();
      const events = await got;
      assert.deepEqual(events.map((e) => e.object.metadata?.name), ["p8"]);
    });

    await t.step("a silent stream is given up after the idle limit", async () => {
      const t0 = performance.now();
      const e = await drain(client.watchPods({ resourceVersion: server.resourceVersion, idleTimeoutMs: 150 }))
        .then(() => undefined, (e) => e);
      assert.ok(e instanceof KubeRequestError, String(e));
      assert.match(e.message, /was silent for 150 ms/);
      assert.ok(performance.now() - t0 < 1500);
      await waitUntil(() => server.openWatches === 0, "the watch to close");
    });

    await t.step("the caller's abort ends a watch with the abort reason", async () => {
      const ctl = new AbortController();
      const { done: got } = await opened(
        server,
        client.watchPods({ resourceVersion: server.resourceVersion, signal: ctl.signal }),
      );
      ctl.abort(new Error("stopping"));
      await assert.rejects(got, /stopping/);
      await waitUntil(() => server.openWatches === 0, "the watch to close");
    });
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("KubeClient gives up on a server that never answers", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const c of listener) conns.push(c);
    } catch { /* closed */ }
  })();
  const client = new KubeClient(conn(`http://127.0.0.1:${listener.addr.port}`), { requestTimeoutMs: 200 });
  try {
    const e = await client.listPods({}).then(() => undefined, (e) => e);
    assert.ok(e instanceof KubeRequestError, String(e));
    assert.match(e.message, /got no answer within 200 ms/);
  } finally {
    client.close();
    for (const c of conns) c.close();
    listener.close();
    await accepting;
  }
});

Deno.test("KubeClient over TLS", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-pki-" });
  let pki: TestPki;
  try {
    pki = await makeTestPki(dir);
  } catch (e) {
    await Deno.remove(dir, { recursive: true });
    throw e;
  }
  const other = await makeTestPki(await Deno.makeTempDir({ dir, prefix: "other-" }));
  try {
    await t.step("a server certificate signed by the configured CA is trusted", async () => {
      const server = await FakeApiServer.start({
        token: "t",
        tls: { cert: pki.serverCert, key: pki.serverKey },
      });
      const tok = new CountingToken("t");
      const good = new KubeClient(conn(server.url, { caCerts: [pki.caCert], token: tok }));
      const wrongCa = new KubeClient(conn(server.url, { caCerts: [other.caCert], token: tok }));
      const insecure = new KubeClient(conn(server.url, { insecureSkipTlsVerify: true, token: tok }));
      try {
        server.addPod(makePod("tls-pod"));
        const res = await good.listPods({ fieldSelector: SELECTOR });
        assert.deepEqual(res.items.map((p) => p.metadata?.name), ["tls-pod"]);
        assert.match(server.url, /^https:/);

        const e = await wrongCa.listPods({}).then(() => undefined, (e) => e);
        assert.ok(e instanceof KubeRequestError, String(e));
        assert.match(e.message, /request to https:\/\/127\.0\.0\.1:\d+ failed/);
        assert.doesNotMatch(e.message, /insecure-skip-tls-verify/);

        const e2 = await insecure.listPods({}).then(() => undefined, (e) => e);
        assert.ok(e2 instanceof KubeRequestError, String(e2));
        assert.match(
          e2.message,
          /insecure-skip-tls-verify, which is only honoured .*--unsafely-ignore-certificate-errors/,
        );
      } finally {
        good.close();
        wrongCa.close();
        insecure.close();
        await server.close();
      }
    });

    await t.step("a client certificate authenticates where the server requires one", async () => {
      const server = await FakeApiServer.start({
        token: "not-sent",
        tls: { cert: pki.serverCert, key: pki.serverKey },
        clientCa: pki.caCert,
      });
      const withCert = new KubeClient(
        conn(server.url, { caCerts: [pki.caCert], clientCert: { cert: pki.clientCert, key: pki.clientKey } }),
      );
      const without = new KubeClient(conn(server.url, { caCerts: [pki.caCert] }));
      try {
        server.addPod(makePod("mtls-pod"));
        const p = await withCert.getPod("default", "mtls-pod");
        assert.equal(p?.metadata?.name, "mtls-pod");
        assert.equal(server.requests.at(-1)?.clientCn, "system:node:node-a");
        assert.equal(server.requests.at(-1)?.authorization, null);

        const events: PodWatchEvent[] = [];
        for await (const ev of withCert.watchPods({ resourceVersion: "0", fieldSelector: SELECTOR })) {
          events.push(ev);
          break;
        }
        assert.equal(events[0]?.object.metadata?.name, "mtls-pod");

        await assert.rejects(without.getPod("default", "mtls-pod"), KubeRequestError);
      } finally {
        withCert.close();
        without.close();
        await server.close();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function drain(it: AsyncIterable<PodWatchEvent>): Promise<PodWatchEvent[]> {
  const out: PodWatchEvent[] = [];
  for await (const ev of it) out.push(ev);
  return out;
}

/** Starts draining `watch` once no other watch is open; returns when the server holds it. */
async function opened(
  server: FakeApiServer,
  watch: AsyncIterable<PodWatchEvent>,
): Promise<{ done: Promise<PodWatchEvent[]> }> {
  await waitUntil(() => server.openWatches === 0, "earlier watches to close");
  const got = drain(watch);
  // Seen by the caller only through the returned promise; this keeps an early failure from going unhandled.
  got.catch(() => {});
  await waitUntil(() => server.openWatches === 1, "the watch to open");
  return { done: got };
}
