// Credentials for the CNI plugin, which runs on the host where the agent's service-account mount is
// not visible: a kubeconfig with the API server's address, its CA and the agent's token, readable
// by root only. The plugin needs them only when the daemon cannot be asked, to read one pod; the
// token is copied again whenever the kubelet rotates it.
import { Buffer } from "node:buffer";
import { dirname } from "node:path";
import { inClusterConnection, SERVICE_ACCOUNT_DIR } from "./config.ts";
import { writeAllSync } from "../util/bytes.ts";

export interface PluginKubeconfigOptions {
  env?: (name: string) => string | undefined;
  serviceAccountDir?: string;
}

/** The kubeconfig text for the in-cluster connection, or undefined when not running in a cluster. */
export function inClusterKubeconfigText(opts: PluginKubeconfigOptions = {}): string | undefined {
  const env = opts.env ?? ((n: string) => Deno.env.get(n));
  if (!env("KUBERNETES_SERVICE_HOST") || !env("KUBERNETES_SERVICE_PORT")) return undefined;
  // The address and CA the daemon connects with itself, read and checked the same way.
  const { server, caCerts } = inClusterConnection({ env, serviceAccountDir: opts.serviceAccountDir });
  const token = Deno.readTextFileSync(`${opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR}/token`).trim();
  // JSON is YAML: the plugin's kubeconfig reader takes it as it is.
  return JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{
        name: "cluster",
        cluster: { server, "certificate-authority-data": Buffer.from(caCerts![0]!).toString("base64") },
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
