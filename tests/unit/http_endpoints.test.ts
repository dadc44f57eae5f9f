// The network port serves health and metrics only; readiness names pods that could not be attached,
// and liveness reports them without failing (a restart would not attach them).
import assert from "node:assert/strict";
import { serveHttp } from "../../src/daemon/http.ts";
import { Registry } from "../../src/metrics/registry.ts";

Deno.test("HTTP endpoints: /readyz and /healthz say when a pod could not be attached; no pod data", async () => {
  let unattached: string | undefined;
  const server = serveHttp("127.0.0.1:0", new Registry(), {
    notReady: () => unattached && `1 meshed pod(s) could not be attached: ${unattached}`,
    unhealthy: () => undefined,
    degraded: () => unattached && `meshed pods not attached: ${unattached.split(" ")[0]}`,
  });
  try {
    const base = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
    const get = async (path: string) => {
      const res = await fetch(base + path);
      return { status: res.status, text: await res.text() };
    };
    assert.deepEqual(await get("/readyz"), { status: 200, text: "ready\n" });
    assert.deepEqual(await get("/healthz"), { status: 200, text: "ok\n" });
    unattached = "default/web (XDP attach failed: EBUSY)";
    const ready = await get("/readyz");
    assert.equal(ready.status, 503);
    assert.match(ready.text, /could not be attached: default\/web \(XDP attach failed: EBUSY\)/);
    const live = await get("/healthz");
    assert.equal(live.status, 200, "a pod that cannot be attached is no reason to restart the agent");
    assert.match(live.text, /^ok, degraded: meshed pods not attached: default\/web/);
    for (const path of ["/pods", "/pods?x=1", "/attachments", "/"]) {
      assert.equal((await get(path)).status, 404, `${path} is not served on the network port`);
    }
    assert.equal((await get("/metrics")).status, 200);
  } finally {
    await server.shutdown();
  }
});
