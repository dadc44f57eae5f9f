// The Kubernetes pod source against the fake API server: snapshots from list and watch, resourceVersion
// bookkeeping (bookmarks, drops, 410 relists), backoff and recovery from refused tokens and server
// errors, token rotation, and a stop() that leaves no request, stream or timer behind.
import assert from "node:assert/strict";
import { captureLogs } from "../../src/log/logger.ts";
import { KubeApiError } from "../../src/kube/client.ts";
import type { KubeConnection } from "../../src/kube/config.ts";
import { KubePodSource, type KubePodSourceOptions } from "../../src/kube/pod_source.ts";
import { FileToken, StaticToken } from "../../src/kube/token.ts";
import { sleep } from "../../testbed/mod.ts";
import type { Pod } from "../../src/pods/source.ts";
import { FakeApiServer, makePod, waitUntil } from "../../testbed/fake_apiserver.ts";

const TOKEN = "node-agent-token";

interface Harness {
  server: FakeApiServer;
  source: KubePodSource;
  snapshots: Pod[][];
  names(i?: number): string[];
}

async function harness(
  opts: Partial<KubePodSourceOptions> = {},
  conn: Partial<KubeConnection> = {},
  setup?: (s: FakeApiServer) => void,
): Promise<Harness> {
  const server = await FakeApiServer.start({ token: TOKEN });
  setup?.(server);
  const source = new KubePodSource({
    config: {
      server: server.url,
      insecureSkipTlsVerify: false,
      token: new StaticToken(TOKEN),
      description: "test",
      ...conn,
    },
    nodeName: "node-a",
    fetchTimeoutMs: 2000,
    backoff: { initialMs: 20, maxMs: 100 },
    watchTimeoutSeconds: 30,
    debounceMs: 20,
    pageSize: 2,
    ...opts,
  });
  const snapshots: Pod[][] = [];
  const h: Harness = {
    server,
    source,
    snapshots,
    names: (i = -1) => (snapshots.at(i) ?? []).map((p) => p.metadata!.name!).sort(),
  };
  return h;
}

async function started(
  opts: Partial<KubePodSourceOptions> = {},
  conn: Partial<KubeConnection> = {},
): Promise<Harness> {
  const h = await harness(opts, conn, (s) => {
    s.addPod(makePod("a", { ip: "10.0.0.1" }));
    s.addPod(makePod("b", { ip: "10.0.0.2" }));
    s.addPod(makePod("c", { ip: "10.0.0.3" }));
    s.addPod(makePod("other-node", { node: "node-b" }));
  });
  await h.source.start((pods) => h.snapshots.push(pods));
  await waitUntil(() => h.server.openWatches === 1, "the first watch");
  return h;
}

async function done(h: Harness): Promise<void> {
  await h.source.stop();
  await h.server.close();
}

/** Waits until a snapshot newer than `after` satisfies `cond`. */
async function snapshotWhere(h: Harness, after: number, cond: (names: string[]) => boolean, what: string) {
  await waitUntil(() => h.snapshots.length > after && cond(h.names()), what);
}

const lastWatch = (h: Harness) => h.server.requestsOf("watch").at(-1)!;

Deno.test("list and watch deliver complete snapshots of this node's pods", async (t) => {
  const h = await started({ debounceMs: 40 });
  try {
    await t.step("the first snapshot is delivered before start() resolves, from a paged list", () => {
      assert.equal(h.snapshots.length, 1);
      assert.deepEqual(h.names(), ["a", "b", "c"]);
      assert.equal(h.server.requestsOf("list").length, 2, "two pages of two");
      const s = h.source.stats();
      assert.equal(s.lists, 1);
      assert.equal(s.watchRestarts, 0);
      assert.equal(s.errors, 0);
      assert.ok(s.lastSyncMs > 0);
      assert.equal(h.source.description, `kubernetes ${h.server.url}`);
      assert.equal(lastWatch(h).params.get("resourceVersion"), h.server.resourceVersion);
      assert.equal(lastWatch(h).params.get("fieldSelector"), "spec.nodeName=node-a");
      const timeout = Number(lastWatch(h).params.get("timeoutSeconds"));
      assert.ok(timeout >= 30 && timeout <= 60, `timeoutSeconds ${timeout} is the base plus jitter`);
    });

    await t.step("added, modified and deleted pods show in the next snapshots", async () => {
      let n = h.snapshots.length;
      h.server.addPod(makePod("d"));
      await snapshotWhere(h, n, (names) => names.includes("d"), "pod d");
      n = h.snapshots.length;
      h.server.updatePod("default", "a", (p) => {
        p.status!.podIP = "10.0.9.9";
      });
      await waitUntil(
        () => h.snapshots.length > n && h.snapshots.at(-1)!.some((p) => p.status?.podIP === "10.0.9.9"),
        "pod a's new IP",
      );
      n = h.snapshots.length;
      h.server.deletePod("default", "b");
      await snapshotWhere(h, n, (names) => !names.includes("b"), "pod b gone");
      assert.deepEqual(h.names(), ["a", "c", "d"]);
    });

    await t.step("pods of other nodes never show", async () => {
      const n = h.snapshots.length;
      h.server.addPod(makePod("far", { node: "node-b" }));
      h.server.addPod(makePod("e"));
      await snapshotWhere(h, n, (names) => names.includes("e"), "pod e");
      assert.ok(h.snapshots.every((s) => s.every((p) => p.spec?.nodeName === "node-a")));
    });

    await t.step("a burst of changes is delivered as one snapshot", async () => {
      const n = h.snapshots.length;
      for (let i = 0; i < 10; i++) h.server.addPod(makePod(`burst-${i}`));
      await snapshotWhere(
        h,
        n,
        (names) => names.filter((x) => x.startsWith("burst-")).length === 10,
        "the burst",
      );
      assert.ok(h.snapshots.length - n <= 2, `${h.snapshots.length - n} snapshots for a burst of 10`);
      assert.equal(h.source.stats().errors, 0);
    });

    await t.step("get fetches one pod directly", async () => {
      const p = await h.source.get("default", "c");
      assert.equal(p?.status?.podIP, "10.0.0.3");
      assert.equal(await h.source.get("default", "missing"), undefined);
      assert.equal(h.server.requestsOf("get").length, 2);
    });
  } finally {
    await done(h);
  }
});

Deno.test("a change after a quiet spell goes out at once; a burst goes out as one snapshot per debounceMs", async () => {
  const h = await started({ debounceMs: 400 });
  try {
    await sleep(450);
    let n = h.snapshots.length;
    let t0 = performance.now();
    h.server.addPod(makePod("d"));
    await snapshotWhere(h, n, (names) => names.includes("d"), "pod d");
    const alone = performance.now() - t0;
    assert.ok(alone < 300, `a lone change waited ${alone.toFixed(0)} ms, as if debounced`);
    // Right after that snapshot: the burst waits out the rest of the 400 ms, then goes out whole.
    n = h.snapshots.length;
    t0 = performance.now();
    for (const name of ["e", "f", "g"]) h.server.addPod(makePod(name));
    await snapshotWhere(h, n, (names) => names.includes("g"), "pods e, f, g");
    const burst = performance.now() - t0;
    assert.equal(h.snapshots.length, n + 1, "the burst is one snapshot");
    assert.deepEqual(h.names(), ["a", "b", "c", "d", "e", "f", "g"]);
    assert.ok(burst >= 250, `the burst went out after ${burst.toFixed(0)} ms, inside the spacing`);
  } finally {
    await done(h);
  }
});

Deno.test("a bookmark moves the resourceVersion the next watch starts from", async () => {
  const h = await started();
  try {
    const rv = h.server.advance(7);
    assert.notEqual(h.source.resourceVersion, rv);
    h.server.bookmark();
    await waitUntil(() => h.source.resourceVersion === rv, "the bookmark's resourceVersion");
    const watches = h.server.requestsOf("watch").length;
    h.server.endWatches();
    await waitUntil(() => h.server.requestsOf("watch").length > watches, "the next watch");
    assert.equal(lastWatch(h).params.get("resourceVersion"), rv);
    assert.equal(h.source.stats().watchRestarts, 1);
    assert.equal(h.source.stats().lists, 1, "a clean end is followed by a watch, not a list");
    assert.equal(h.snapshots.length, 1, "a bookmark is not a change");
  } finally {
    await done(h);
  }
});

Deno.test("410 Expired makes the source list again", async (t) => {
  const h = await started();
  try {
    await t.step("an ERROR 410 event on the open watch", async () => {
      h.server.addPod(makePod("while-expiring"));
      await snapshotWhere(h, 1, (names) => names.includes("while-expiring"), "the new pod");
      h.server.expireWatches();
      await waitUntil(() => h.source.stats().lists === 2, "a relist");
      await waitUntil(() => h.server.openWatches === 1, "the watch after the relist");
      assert.equal(lastWatch(h).params.get("resourceVersion"), h.server.resourceVersion);
      assert.equal(h.source.stats().errors, 0, "expiry is routine, not an error");
    });

    await t.step("a rewatch after a drop from a resourceVersion the server forgot meanwhile", async () => {
      const n = h.snapshots.length;
      let once = false;
      h.server.beforeAnswer = (kind) => {
        if (kind === "watch" && !once) {
          once = true;
          h.server.addPod(makePod("missed"));
          h.server.deletePod("default", "a");
          h.server.compact();
        }
      };
      h.server.dropWatches();
      await waitUntil(() => h.source.stats().lists === 3, "a relist after the 410");
      await snapshotWhere(
        h,
        n,
        (names) => names.includes("missed") && !names.includes("a"),
        "the relisted state",
      );
      assert.deepEqual(h.names(), ["b", "c", "missed", "while-expiring"]);
      const watches = h.server.requestsOf("watch");
      assert.equal(watches.at(-1)!.params.get("resourceVersion"), h.server.resourceVersion);
      h.server.beforeAnswer = undefined;
    });
  } finally {
    await done(h);
  }
});

Deno.test("server errors and refused tokens: backoff with growing delays, then recovery", async (t) => {
  // random() = 0 makes each delay exactly half its ceiling: 10, 20, 40 ms.
  const h = await started({ random: () => 0, backoff: { initialMs: 20, maxMs: 200 } });
  try {
    await t.step("500s on the rewatch", async () => {
      const before = h.server.requestsOf("watch").length;
      h.server.failNext("watch", 500, 3);
      h.server.endWatches();
      await waitUntil(
        () => h.server.openWatches === 1 && h.server.requestsOf("watch").length === before + 4,
        "recovery",
      );
      const tries = h.server.requestsOf("watch").slice(before);
      assert.deepEqual(tries.map((r) => r.status), [500, 500, 500, 200]);
      const gaps = tries.slice(1).map((r, i) => r.at - tries[i]!.at);
      [10, 20, 40].forEach((min, i) => assert.ok(gaps[i]! >= min - 2, `gap ${i} ${gaps[i]} ms >= ${min} ms`));
      assert.equal(h.source.stats().errors, 3);
      assert.equal(h.source.stats().lists, 1, "errors keep the resourceVersion: no relist");
      const n = h.snapshots.length;
      h.server.addPod(makePod("after-500"));
      await snapshotWhere(h, n, (names) => names.includes("after-500"), "an event after recovery");
    });

    await t.step("the backoff starts over after a success", async () => {
      const before = h.server.requestsOf("watch").length;
      h.server.failNext("watch", 503, 1);
      h.server.endWatches();
      await waitUntil(
        () => h.server.openWatches === 1 && h.server.requestsOf("watch").length === before + 2,
        "recovery",
      );
      const [fail, ok] = h.server.requestsOf("watch").slice(before);
      assert.ok(ok!.at - fail!.at < 35, `a first retry after ${ok!.at - fail!.at} ms, not a grown delay`);
    });

    await t.step("a 401 while relisting, then the list succeeds", async () => {
      h.server.failNext("list", 401, 2);
      h.server.expireWatches();
      await waitUntil(
        () => h.source.stats().lists === 2 && h.server.openWatches === 1,
        "the relist to succeed",
      );
      assert.deepEqual(h.server.requestsOf("list").slice(-4).map((r) => r.status), [401, 401, 200, 200]);
      assert.equal(h.source.stats().errors, 6);
      assert.ok(h.names().includes("after-500"), "the last good state was kept throughout");
    });
  } finally {
    await done(h);
  }
});

Deno.test("watches that end at once without an event are retried with backoff, not in a tight loop", async () => {
  const h = await started({ random: () => 0, backoff: { initialMs: 20, maxMs: 100 } });
  try {
    const before = h.server.requestsOf("watch").length;
    h.server.endWatchesAtOnce = true;
    h.server.endWatches();
    await new Promise((r) => setTimeout(r, 300));
    const tries = h.server.requestsOf("watch").length - before;
    // Delays 10, 20, 40, 50, 50, ... ms: about eight tries in 300 ms.
    assert.ok(tries >= 3 && tries <= 12, `${tries} watches in 300 ms`);
    h.server.endWatchesAtOnce = false;
    await waitUntil(() => h.server.openWatches === 1, "a watch that stays open");
    assert.equal(h.source.stats().errors, 0);
  } finally {
    await done(h);
  }
});

Deno.test("a rotated token file is picked up", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-kube-token-" });
  const path = `${dir}/token`;
  await Deno.writeTextFile(path, TOKEN);
  try {
    await t.step("after a 401, at once", async () => {
      const token = new FileToken(path, { maxAgeMs: 60_000 });
      const h = await started({}, { token });
      try {
        await Deno.writeTextFile(path, "rotated-1");
        h.server.token = "rotated-1";
        h.server.endWatches();
        await waitUntil(
          () => h.server.openWatches === 1 && lastWatch(h).status === 200,
          "a watch with the new token",
        );
        const watches = h.server.requestsOf("watch");
        assert.equal(watches.at(-2)!.status, 401);
        assert.equal(watches.at(-1)!.authorization, "Bearer rotated-1");
        assert.equal(token.reads, 2);
      } finally {
        await done(h);
      }
    });

    await t.step("when the cached copy is older than the limit, before any 401", async () => {
      await Deno.writeTextFile(path, TOKEN);
      const token = new FileToken(path, { maxAgeMs: 100 });
      const h = await started({}, { token });
      try {
        await Deno.writeTextFile(path, "rotated-2");
        h.server.token = "rotated-2";
        await new Promise((r) => setTimeout(r, 150));
        h.server.endWatches();
        await waitUntil(
          () => h.server.openWatches === 1 && h.server.requestsOf("watch").length === 2,
          "the rewatch",
        );
        assert.equal(lastWatch(h).status, 200);
        assert.ok(h.server.requests.every((r) => r.status !== 401), "no request was refused");
      } finally {
        await done(h);
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("drops and garbage: logged, and the watch resumes from the last resourceVersion", async (t) => {
  using capture = captureLogs(["kube"]);
  const records = capture.records;
  const h = await started();
  try {
    await t.step("a connection dropped mid-stream", async () => {
      h.server.addPod(makePod("before-drop"));
      await snapshotWhere(h, 1, (names) => names.includes("before-drop"), "the pod");
      const rv = h.source.resourceVersion;
      assert.equal(rv, h.server.resourceVersion);
      const watches = h.server.requestsOf("watch").length;
      h.server.dropWatches();
      await waitUntil(
        () => h.server.requestsOf("watch").length > watches && h.server.openWatches === 1,
        "a rewatch",
      );
      assert.equal(lastWatch(h).params.get("resourceVersion"), rv);
      assert.equal(h.source.stats().lists, 1);
      assert.equal(h.source.stats().watchRestarts, 1);
      assert.equal(h.source.stats().errors, 1);
      assert.ok(h.names().includes("before-drop"));
    });

    await t.step("a line that is not JSON", async () => {
      const rv = h.source.resourceVersion;
      const watches = h.server.requestsOf("watch").length;
      h.server.sendRaw('{"type":"ADDED","object":{"metadata":{"na');
      h.server.sendRaw("<<garbage>>\n");
      await waitUntil(
        () => h.server.requestsOf("watch").length > watches && h.server.openWatches === 1,
        "a rewatch",
      );
      assert.equal(lastWatch(h).params.get("resourceVersion"), rv);
      const logged = records.filter((r) => r.level === "error").map((r) => String(r.properties.error));
      assert.ok(logged.some((m) => /a line that is not JSON: .*<<garbage>>/.test(m)), JSON.stringify(logged));
      assert.equal(h.source.stats().errors, 2);
      const n = h.snapshots.length;
      h.server.addPod(makePod("after-garbage"));
      await snapshotWhere(h, n, (names) => names.includes("after-garbage"), "an event after the garbage");
      assert.equal(h.source.stats().lists, 1);
    });
  } finally {
    await done(h);
  }
});

Deno.test("a consumer that throws does not stop the source", async () => {
  using capture = captureLogs(["kube"]);
  const records = capture.records;
  let calls = 0;
  const h = await harness({}, {}, (s) => s.addPod(makePod("a")));
  try {
    await h.source.start(() => {
      calls++;
      throw new Error("consumer broke");
    });
    await waitUntil(() => h.server.openWatches === 1, "the watch");
    h.server.addPod(makePod("b"));
    await waitUntil(() => calls === 2, "the second snapshot");
    assert.ok(records.some((r) => r.level === "error" && r.properties.error === "consumer broke"));
    assert.equal(h.server.openWatches, 1, "still watching");
  } finally {
    await done(h);
  }
});

Deno.test("start() rejects when the first list fails, and may be called again", async () => {
  const h = await harness({}, {}, (s) => s.addPod(makePod("a")));
  try {
    h.server.failNext("list", 401);
    const e = await h.source.start((p) => h.snapshots.push(p)).then(() => undefined, (e) => e);
    assert.ok(e instanceof KubeApiError);
    assert.equal(e.code, 401);
    assert.equal(h.snapshots.length, 0);
    assert.equal(h.source.stats().errors, 1);
    assert.equal(h.server.openWatches, 0);
    await h.source.start((p) => h.snapshots.push(p));
    assert.deepEqual(h.names(), ["a"]);
    await assert.rejects(h.source.start(() => {}), /already called/);
  } finally {
    await done(h);
  }
});

Deno.test("stop() ends the stream, the backoff wait and every timer", async (t) => {
  await t.step("while watching", async () => {
    const h = await started();
    await h.source.stop();
    await waitUntil(() => h.server.openWatches === 0, "the stream to close");
    const count = h.server.requests.length;
    h.server.addPod(makePod("after-stop"));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(h.server.requests.length, count, "no request after stop()");
    assert.ok(!h.names().includes("after-stop"));
    await assert.rejects(h.source.get("default", "a"), /after stop/);
    await h.source.stop(); // twice is harmless
    await h.server.close();
  });

  await t.step("while waiting out a long backoff", async () => {
    const h = await started({ backoff: { initialMs: 30_000, maxMs: 60_000 } });
    try {
      h.server.failNext("watch", 500, 1);
      // A watch that carried something and then ended is followed at once by the next one.
      h.server.bookmark();
      h.server.endWatches();
      await waitUntil(() => h.source.stats().errors === 1, "the failed rewatch");
      const t0 = performance.now();
      await h.source.stop();
      assert.ok(performance.now() - t0 < 500, "stop() does not wait for the backoff");
    } finally {
      await done(h);
    }
  });

  await t.step("with a snapshot pending in the debounce", async () => {
    const h = await started({ debounceMs: 10_000 });
    try {
      h.server.addPod(makePod("pending"));
      await waitUntil(() => h.source.resourceVersion === h.server.resourceVersion, "the event");
      await h.source.stop();
      assert.equal(h.snapshots.length, 1, "the pending snapshot is dropped, its timer cleared");
    } finally {
      await done(h);
    }
  });
});
