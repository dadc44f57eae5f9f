// The test peers (nettool.py): servers, clients, probes and the Envoy-like sidecar, run in pods as the
// uids a mesh gives them.
import { meshParams } from "../src/mesh/modes.ts";
import type { MeshParams } from "../src/mesh/types.ts";
import { type Proc, spawn, type SpawnOptions } from "./proc.ts";
import { ROOT } from "./root.ts";
import { Scope } from "./scope.ts";

/**
 * The test peers' script, copied where unprivileged test uids can read it (the checkout may live
 * under a home directory they cannot enter).
 */
export const NETTOOL: string = (() => {
  const dir = Deno.makeTempDirSync({ prefix: `merbridge-nettool-${Deno.pid}-` });
  Deno.chmodSync(dir, 0o755);
  const path = `${dir}/nettool.py`;
  Deno.copyFileSync(`${ROOT}testbed/nettool.py`, path);
  Deno.chmodSync(path, 0o755);
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  return path;
})();
/** The distribution's python: unprivileged test uids cannot reach a per-user install under /root. */
export const PYTHON = "/usr/bin/python3";

/** Runs nettool.py to completion inside a pod and returns its single JSON result line. */
export async function nettool(
  opts: SpawnOptions,
  args: string[],
): Promise<Record<string, unknown>> {
  await using scope = new Scope();
  const p = spawn(scope, PYTHON, ["-u", NETTOOL, ...args], opts);
  await p.done;
  const last = p.lines.at(-1);
  if (!last) throw new Error(`nettool ${args.join(" ")} printed nothing: ${p.stderr.join("\n")}`);
  return last;
}

export function startNettool(scope: Scope, opts: SpawnOptions, args: string[]): Proc {
  return spawn(scope, PYTHON, ["-u", NETTOOL, ...args], opts);
}

export type ListenerKind = "outbound" | "inbound";

export interface SidecarOptions extends SpawnOptions {
  /** Whose ports and proxy uid/gid (default Istio's). */
  mesh?: MeshParams;
  /** Which listeners it opens (default both). */
  listen?: ListenerKind[];
  /** Listen on [::] for both families. */
  dualStack?: boolean;
  /** More arguments for nettool proxy. */
  args?: string[];
}

/**
 * The stand-in for Envoy (nettool proxy): the mesh's outbound and inbound listeners, as the mesh's proxy
 * uid and gid unless told otherwise. Returns at once; `sidecarReady` waits for its listeners.
 */
export function startSidecar(scope: Scope, o: SidecarOptions): Proc {
  const mesh = o.mesh ?? meshParams("istio");
  const ports: Record<ListenerKind, number> = { outbound: mesh.outboundPort, inbound: mesh.inboundPort };
  return startNettool(scope, { ...o, uid: o.uid ?? mesh.proxyUid, gid: o.gid ?? mesh.proxyGid }, [
    "proxy",
    ...(o.listen ?? ["outbound", "inbound"]).flatMap((k) => ["--listen", `${k}=${ports[k]}`]),
    ...(o.dualStack ? ["--dual-stack"] : []),
    ...(o.args ?? []),
  ]);
}

/** Waits until a peer says it listens: one line per kind ("" for a server's single listener). */
export async function listening(p: Proc, kinds: string[] = [""], timeoutMs = 5000, what = "listening") {
  for (const kind of kinds) {
    await p.waitFor(
      (l) => l.event === "listening" && (kind === "" || l.kind === kind),
      timeoutMs,
      `${what}${kind ? ` ${kind}` : ""}`,
    );
  }
}

/** Waits for a sidecar's listeners. */
export function sidecarReady(p: Proc, kinds: ListenerKind[] = ["outbound", "inbound"], timeoutMs = 15000) {
  return listening(p, kinds, timeoutMs, "sidecar");
}

/**
 * The sidecar's DNS listener (as istio-agent's on the mesh's DNS port, as the proxy uid), answering as
 * "proxy-dns"; returned once it listens.
 */
export async function startDnsProxy(
  scope: Scope,
  o: SpawnOptions & { mesh?: MeshParams; bind?: string },
): Promise<Proc> {
  const mesh = o.mesh ?? meshParams("istio");
  const p = startNettool(
    scope,
    { netns: o.netns, cgroup: o.cgroup, uid: o.uid ?? mesh.proxyUid, gid: o.gid },
    [
      "udp-server",
      "--name",
      "proxy-dns",
      "--bind",
      o.bind ?? "127.0.0.1",
      "--port",
      String(mesh.dnsPort),
    ],
  );
  await listening(p, [""], 5000, "DNS stand-in");
  return p;
}
