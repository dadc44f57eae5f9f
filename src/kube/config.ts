// How to reach the API server: what a connection is, and the in-cluster one (the pod's service
// account). A kubeconfig file is read by kubeconfig.ts, loaded only when one is given: its YAML parser is
// the one npm package of the daemon's start, 4 MiB and 10-15 ms that an in-cluster agent does not pay.
import { FileToken, type TokenSource } from "./token.ts";

/** Everything the client needs to talk to one API server. */
export interface KubeConnection {
  /** Base URL without a trailing slash; may carry a path prefix (API proxies). */
  server: string;
  /** Extra root certificates (PEM) trusted for the server's certificate. */
  caCerts?: string[];
  /** Client certificate chain and key (PEM) for mutual TLS. */
  clientCert?: { cert: string; key: string };
  /**
   * The kubeconfig asked to skip server certificate checks. Deno's fetch verifies certificates unless
   * the runtime was started with --unsafely-ignore-certificate-errors, so this only changes how a TLS
   * failure is explained.
   */
  insecureSkipTlsVerify: boolean;
  token?: TokenSource;
  /** For logs: where these settings come from. */
  description: string;
}

export class KubeConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KubeConfigError";
  }
}

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface InClusterOptions {
  /** Environment lookup; default Deno.env.get. */
  env?: (name: string) => string | undefined;
  /** Directory holding `token` and `ca.crt`; default the standard mount. */
  serviceAccountDir?: string;
  /** How long a token read from the file is used before reading it again; default 60 s. */
  tokenMaxAgeMs?: number;
  now?: () => number;
}

/** The connection of a pod running in the cluster, from its environment and service-account mount. */
export function inClusterConnection(opts: InClusterOptions = {}): KubeConnection {
  const env = opts.env ?? ((n: string) => Deno.env.get(n));
  const host = env("KUBERNETES_SERVICE_HOST");
  const port = env("KUBERNETES_SERVICE_PORT");
  if (!host || !port) {
    throw new KubeConfigError(
      "not running inside a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set " +
        "(give --kubeconfig to run elsewhere)",
    );
  }
  if (!/^\d{1,5}$/.test(port)) {
    throw new KubeConfigError(`KUBERNETES_SERVICE_PORT is not a port number: ${JSON.stringify(port)}`);
  }
  const dir = opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const tokenPath = `${dir}/token`;
  const caPath = `${dir}/ca.crt`;
  const ca = readPem(caPath, "service-account CA certificate");
  try {
    Deno.statSync(tokenPath);
  } catch (e) {
    throw new KubeConfigError(`service-account token ${tokenPath}: ${(e as Error).message}`);
  }
  const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return {
    server,
    caCerts: [ca],
    insecureSkipTlsVerify: false,
    token: new FileToken(tokenPath, { maxAgeMs: opts.tokenMaxAgeMs, now: opts.now }),
    description: `in-cluster service account (${server})`,
  };
}

/** A PEM file's text; `kubeconfig` names the file that referred to it, for errors. */
export function readPem(path: string, what: string, kubeconfig?: string): string {
  const prefix = kubeconfig ? `kubeconfig ${kubeconfig}: ${what}` : what;
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new KubeConfigError(`${prefix} ${path}: ${(e as Error).message}`);
  }
  if (!text.includes("-----BEGIN ")) throw new KubeConfigError(`${prefix} ${path} does not hold PEM data`);
  return text;
}
