import assert from "node:assert/strict";
import { Registry } from "../../src/metrics/registry.ts";
import { parseListenAddr, serveHttp } from "../../src/daemon/http.ts";

Deno.test("Prometheus text format: counters, gauges, histograms, labels escaped", () => {
  const r = new Registry();
  const c = r.counter("t_events_total", "Events");
  c.inc({ kind: 'a"b' });
  c.inc({ kind: 'a"b' }, 2);
  c.set({ kind: "big" }, 2n ** 64n - 1n);
  const g = r.gauge("t_pods", "Pods");
  g.set({ state: "meshed" }, 3);
  const h = r.histogram("t_seconds", "Time", [0.1, 1]);
  h.observe({ op: "add" }, 0.05);
  h.observe({ op: "add" }, 0.5);
  h.observe({ op: "add" }, 5);
  let collected = 0;
  r.onCollect(() => collected++);
  r.onCollect(() => {
    throw new Error("a broken collector");
  });
  const text = r.render();
  assert.equal(collected, 1);
  assert.match(text, /# TYPE t_events_total counter\n/);
  assert.match(text, /t_events_total\{kind="a\\"b"\} 3\n/);
  assert.match(text, /t_events_total\{kind="big"\} 18446744073709551615\n/);
  assert.match(text, /t_pods\{state="meshed"\} 3\n/);
  assert.match(text, /t_seconds_bucket\{op="add",le="0.1"\} 1\n/);
  assert.match(text, /t_seconds_bucket\{op="add",le="1"\} 2\n/);
  assert.match(text, /t_seconds_bucket\{op="add",le="\+Inf"\} 3\n/);
  assert.match(text, /t_seconds_count\{op="add"\} 3\n/);
  assert.throws(() => r.counter("t_pods", "dup"), /registered twice/);
  assert.throws(() => r.counter("bad name", "x"), /invalid metric name/);
});

Deno.test("HTTP endpoints: healthz, readyz follow the daemon's state; metrics served", async () => {
  assert.deepEqual(parseListenAddr("0.0.0.0:39808"), { hostname: "0.0.0.0", port: 39808 });
  assert.deepEqual(parseListenAddr(":9"), { hostname: "0.0.0.0", port: 9 });
  assert.throws(() => parseListenAddr("nope"), /HOST:PORT/);
  const r = new Registry();
  r.counter("x_total", "x").inc();
  let ready = false;
  const srv = serveHttp("127.0.0.1:0", r, {
    notReady: () => ready ? undefined : "starting",
    unhealthy: () => undefined,
  });
  try {
    const base = `http://127.0.0.1:${(srv.addr as Deno.NetAddr).port}`;
    let res = await fetch(`${base}/readyz`);
    assert.equal(res.status, 503);
    assert.match(await res.text(), /starting/);
    ready = true;
    res = await fetch(`${base}/readyz`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    res = await fetch(`${base}/metrics`);
    assert.match(res.headers.get("content-type") ?? "", /text\/plain; version=0.0.4/);
    assert.match(await res.text(), /x_total 1/);
    res = await fetch(`${base}/nope`);
    assert.equal(res.status, 404);
    await res.body?.cancel();
  } finally {
    await srv.shutdown();
  }
});
