// A kubeconfig file as a connection. Only what fetch can do is accepted; a kubeconfig asking for
// anything else (exec plugins, auth providers, basic auth, impersonation, proxies) is refused by name
// rather than silently connecting without it.
import { load } from "js-yaml";
import { dirname, resolve } from "node:path";
import { KubeConfigError, type KubeConnection, readPem } from "./config.ts";
import { FileToken, StaticToken } from "./token.ts";
import { isRecord } from "../util/record.ts";

export interface KubeconfigOptions {
  /** Context to use instead of current-context. */
  context?: string;
  tokenMaxAgeMs?: number;
  now?: () => number;
}

/** Reads and interprets a kubeconfig file. */
export function loadKubeconfig(path: string, opts: KubeconfigOptions = {}): KubeConnection {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new KubeConfigError(`kubeconfig ${path}: ${(e as Error).message}`);
  }
  return parseKubeconfig(text, path, opts);
}

// Fields this client cannot honour. Ignoring them would connect with other credentials than the user
// configured, so they are refused.
const UNSUPPORTED_USER_FIELDS = [
  "exec",
  "auth-provider",
  "username",
  "password",
  "as",
  "as-uid",
  "as-groups",
  "as-user-extra",
];
const UNSUPPORTED_CLUSTER_FIELDS = ["proxy-url", "tls-server-name"];

type Mapping = Record<string, unknown>;

/**
 * Interprets kubeconfig text. `path` names the file in errors and anchors relative file references
 * (certificate-authority, client-certificate, client-key, tokenFile), as kubectl does.
 */
export function parseKubeconfig(text: string, path: string, opts: KubeconfigOptions = {}): KubeConnection {
  const fail: (msg: string) => never = (msg) => {
    throw new KubeConfigError(`kubeconfig ${path}: ${msg}`);
  };
  let doc: unknown;
  try {
    doc = load(text);
  } catch (e) {
    fail(`not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (!isRecord(doc)) return fail("the document is not a mapping");
  const base = dirname(resolve(path));
  const file = (p: string) => resolve(base, p);

  const contextName = opts.context ?? optString(doc, "current-context", "the document", fail);
  if (!contextName) {
    return fail("no current-context is set and no context was given");
  }
  const context = named(doc, "contexts", "context", contextName, fail);
  const clusterName = optString(context, "cluster", `context "${contextName}"`, fail);
  if (!clusterName) return fail(`context "${contextName}" names no cluster`);
  const cluster = named(doc, "clusters", "cluster", clusterName, fail);
  const where = `cluster "${clusterName}"`;
  for (const f of UNSUPPORTED_CLUSTER_FIELDS) {
    if (present(cluster[f])) fail(`${where}: ${f} is not supported`);
  }

  const serverText = optString(cluster, "server", where, fail);
  if (!serverText) return fail(`${where} has no server`);
  let url: URL;
  try {
    url = new URL(serverText);
  } catch {
    return fail(`${where}: server ${JSON.stringify(serverText)} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    fail(`${where}: server ${serverText} must be an http or https URL`);
  }
  const server = (url.origin + url.pathname).replace(/\/+$/, "");

  const insecure = cluster["insecure-skip-tls-verify"];
  if (insecure !== undefined && typeof insecure !== "boolean") {
    fail(`${where}: insecure-skip-tls-verify must be true or false`);
  }
  const caData = optString(cluster, "certificate-authority-data", where, fail);
  const caFile = optString(cluster, "certificate-authority", where, fail);
  let ca: string | undefined;
  if (caData) ca = decodePem(caData, `${where}: certificate-authority-data`, fail);
  else if (caFile) ca = readPem(file(caFile), `${where}: certificate-authority`, path);
  if (ca && insecure === true) {
    fail(`${where}: a certificate authority together with insecure-skip-tls-verify is contradictory`);
  }

  const conn: KubeConnection = {
    server,
    caCerts: ca ? [ca] : undefined,
    insecureSkipTlsVerify: insecure === true,
    description: `kubeconfig ${path}, context "${contextName}" (${server})`,
  };

  const userName = optString(context, "user", `context "${contextName}"`, fail);
  if (!userName) return conn;
  const user = named(doc, "users", "user", userName, fail);
  const who = `user "${userName}"`;
  for (const f of UNSUPPORTED_USER_FIELDS) {
    if (present(user[f])) fail(`${who}: ${f} is not supported`);
  }

  const tokenFile = optString(user, "tokenFile", who, fail);
  const token = optString(user, "token", who, fail);
  // A token file wins over an inline token: it is the one that gets rotated.
  if (tokenFile) conn.token = new FileToken(file(tokenFile), { maxAgeMs: opts.tokenMaxAgeMs, now: opts.now });
  else if (token) conn.token = new StaticToken(token);

  const certData = optString(user, "client-certificate-data", who, fail);
  const certFile = optString(user, "client-certificate", who, fail);
  const keyData = optString(user, "client-key-data", who, fail);
  const keyFile = optString(user, "client-key", who, fail);
  const cert = certData
    ? decodePem(certData, `${who}: client-certificate-data`, fail)
    : certFile
    ? readPem(file(certFile), `${who}: client-certificate`, path)
    : undefined;
  const key = keyData
    ? decodePem(keyData, `${who}: client-key-data`, fail)
    : keyFile
    ? readPem(file(keyFile), `${who}: client-key`, path)
    : undefined;
  if (cert && !key) fail(`${who} has a client certificate but no client key`);
  if (key && !cert) fail(`${who} has a client key but no client certificate`);
  if (cert && key) conn.clientCert = { cert, key };
  return conn;
}

// kubectl writes empty values for fields it has no data for; those ask for nothing.
function present(v: unknown): boolean {
  return v !== undefined && v !== null && v !== "" && !(Array.isArray(v) && v.length === 0);
}

function optString(m: Mapping, key: string, where: string, fail: (msg: string) => never): string | undefined {
  const v = m[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") return fail(`${where}: ${key} must be a string`);
  return v;
}

/** Finds `{ name, <field>: {...} }` in the list `listKey`, e.g. a context in contexts. */
function named(
  doc: Mapping,
  listKey: string,
  field: string,
  name: string,
  fail: (msg: string) => never,
): Mapping {
  const list = doc[listKey];
  if (list !== undefined && list !== null && !Array.isArray(list)) fail(`${listKey} must be a list`);
  for (const [i, entry] of ((list as unknown[] | null | undefined) ?? []).entries()) {
    if (!isRecord(entry)) fail(`${listKey}[${i}] is not a mapping`);
    const e = entry as Mapping;
    if (e.name !== name) continue;
    const body = e[field];
    if (body === undefined || body === null) return {};
    if (!isRecord(body)) fail(`${field} "${name}" is not a mapping`);
    return body as Mapping;
  }
  return fail(`${field} "${name}" is not defined in ${listKey}`);
}

function decodePem(b64: string, what: string, fail: (msg: string) => never): string {
  let text: string;
  try {
    const bin = atob(b64.replace(/\s+/g, ""));
    text = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
  } catch {
    return fail(`${what} is not valid base64`);
  }
  if (!text.includes("-----BEGIN ")) fail(`${what} does not hold PEM data`);
  return text;
}
