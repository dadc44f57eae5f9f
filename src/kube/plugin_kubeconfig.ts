// Credentials for the CNI plugin, which runs on the host where the agent's service-account mount is
// not visible: a kubeconfig with the API server's address, its CA and the agent's token, readable
// by root only. The plugin needs them only when the daemon cannot be asked, to read one pod; the
// token is copied again whenever the kubelet rotates it.
import { Buffer } from "node:buffer";
import { dirname } from "node:path";
import { SERVICE_ACCOUNT_DIR } from "./config.ts";
import { writeAllSync } from "../util/bytes.ts";

export interface PluginKubeconfigOptions {
  env?: (name: string) => string | undefined;
  serviceAccountDir?: string;
}

/** The kubeconfig text for the in-cluster connection, or undefined when not running in a cluster. */
export function inClusterKubeconfigText(opts: PluginKubeconfigOptions = {}): string | undefined {
  const env = opts.env ?? ((n: string) => Deno.env.get(n));
  const host = env("KUBERNETES_SERVICE_HOST");
  const port = env("KUBERNETES_SERVICE_PORT");
  if (!host || !port) return undefined;
  const dir = opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const token = Deno.readTextFileSync(`${dir}/token`).trim();
  const ca = Deno.readFileSync(`${dir}/ca.crt`);
  const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  // JSON is YAML: the plugin's kubeconfig reader takes it as it is.
  return JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{
        name: "cluster",
        cluster: { server, "certificate-authority-data": Buffer.from(ca).toString("base64") },
      }],
      users: [{ name: "merbridge-cni", user: { token } }],
      contexts: [{ name: "merbridge-cni", context: { cluster: "cluster", user: "merbridge-cni" } }],
      "current-context": "merbridge-cni",
    },
    null,
    2,
  ) + "\n";
}

/** Writes `text` to `path` (0600) when it differs; true when it wrote. */
export function writeRootOnly(path: string, text: string): boolean {
  try {
    if (Deno.readTextFileSync(path) === text) return false;
  } catch {
    // Absent or unreadable: written below.
  }
  Deno.mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${Deno.pid}`;
  const f = Deno.openSync(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    const bytes = new TextEncoder().encode(text);
    writeAllSync(f, bytes);
    f.syncSync();
  } finally {
    f.close();
  }
  Deno.chmodSync(tmp, 0o600);
  Deno.renameSync(tmp, path);
  return true;
}
