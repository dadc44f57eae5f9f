// The daemon's HTTP endpoints: liveness, readiness and Prometheus metrics, and nothing else. The
// port is on the node's network (the agent is hostNetwork): pod data and anything that changes
// state are served only on the root-only unix socket (cni/protocol.ts).
import { getLogger } from "../log/logger.ts";
import type { Registry } from "../metrics/registry.ts";

const log = getLogger("http");

export interface HealthState {
  /** Why the daemon is not ready yet, or undefined once it is. */
  notReady(): string | undefined;
  /** Why the daemon is unhealthy (should be restarted), or undefined. */
  unhealthy(): string | undefined;
  /** Something the operator should know that a restart would not fix, or undefined. */
  degraded?(): string | undefined;
}

export function parseListenAddr(addr: string): { hostname: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]*):(\d+)$/.exec(addr);
  if (!m) throw new Error(`--metrics-addr: expected HOST:PORT, got ${JSON.stringify(addr)}`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`--metrics-addr: port ${port} is out of range`);
  return { hostname: (m[1] || "0.0.0.0").replace(/^\[|\]$/g, ""), port };
}

export function serveHttp(addr: string, registry: Registry, health: HealthState): Deno.HttpServer {
  const { hostname, port } = parseListenAddr(addr);
  return Deno.serve({
    hostname,
    port,
    onListen: (a) => log.info("HTTP endpoints on {addr}", { addr: `${a.hostname}:${a.port}` }),
  }, (req) => {
    const path = new URL(req.url).pathname;
    switch (path) {
      case "/healthz": {
        const why = health.unhealthy();
        if (why) return new Response(`unhealthy: ${why}\n`, { status: 500 });
        const degraded = health.degraded?.();
        return new Response(degraded ? `ok, degraded: ${degraded}\n` : "ok\n");
      }
      case "/readyz": {
        const why = health.notReady();
        return new Response(why ? `not ready: ${why}\n` : "ready\n", { status: why ? 503 : 200 });
      }
      case "/metrics":
        return new Response(registry.render(), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      default:
        return new Response("not found\n", { status: 404 });
    }
  });
}
