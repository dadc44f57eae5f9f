// The few API calls the agent makes, on fetch: list pods (paged), watch pods, get one pod. Errors come
// back typed so that the pod source can tell a stale resourceVersion (relist) from a refused token or a
// server in trouble (back off and retry).
import type { Pod, PodList } from "kubernetes-types/core/v1.d.ts";
import type { Status } from "kubernetes-types/meta/v1.d.ts";
import { VERSION } from "../version.ts";
import type { KubeConnection } from "./config.ts";
import { readLines } from "./json_lines.ts";

/** The API server answered with an error status, or sent an ERROR event in a watch. */
export class KubeApiError extends Error {
  constructor(
    /** HTTP status or the Status object's code. */
    readonly code: number,
    /** The Status reason (Expired, Gone, Unauthorized, ...) when the server gave one. */
    readonly reason: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = "KubeApiError";
  }

  /** The resourceVersion asked for is older than what the server keeps: list again. */
  get expired(): boolean {
    return this.code === 410 || this.reason === "Expired" || this.reason === "Gone";
  }
}

/** The request did not get an answer: network, TLS, or a timeout. */
export class KubeRequestError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "KubeRequestError";
  }
}

/** An answer that is not what the API defines: a watch line that is not an event, a list without items. */
export class KubeProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KubeProtocolError";
  }
}

export type PodWatchEvent =
  | { type: "ADDED" | "MODIFIED" | "DELETED"; object: Pod }
  /** Only object.metadata.resourceVersion is meaningful: how far the watch has got. */
  | { type: "BOOKMARK"; object: Pod };

export interface PodListResult {
  items: Pod[];
  /** The collection's resourceVersion at the time of the list: where a watch continues from. */
  resourceVersion: string;
  /** Requests made, one per page. */
  pages: number;
}

export interface KubeClientOptions {
  /** Limit for a request to be answered (a whole list page; the headers of a watch). Default 30 s. */
  requestTimeoutMs?: number;
}

export interface ListPodsOptions {
  fieldSelector?: string;
  /** Page size; 0 or undefined lists in one request. */
  limit?: number;
  signal?: AbortSignal;
}

export interface WatchPodsOptions {
  fieldSelector?: string;
  resourceVersion: string;
  /** Asks the server to end the watch after this long; it then ends cleanly. */
  timeoutSeconds?: number;
  /**
   * Gives up on a stream silent for this long (a dead connection sends nothing, not even a close).
   * Default: timeoutSeconds plus the request timeout.
   */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
}

// A continue token can expire between pages (410); the list then starts over, a bounded number of times.
const MAX_LIST_RESTARTS = 3;

export class KubeClient {
  readonly server: string;
  readonly #conn: KubeConnection;
  readonly #http?: Deno.HttpClient;
  readonly #timeoutMs: number;

  constructor(conn: KubeConnection, opts: KubeClientOptions = {}) {
    this.#conn = conn;
    this.server = conn.server;
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
    if (conn.caCerts?.length || conn.clientCert) {
      this.#http = conn.clientCert
        ? Deno.createHttpClient({
          caCerts: conn.caCerts,
          cert: conn.clientCert.cert,
          key: conn.clientCert.key,
        })
        : Deno.createHttpClient({ caCerts: conn.caCerts });
    }
  }

  close(): void {
    this.#http?.close();
  }

  /** Lists pods, following continue tokens until the last page. */
  async listPods(opts: ListPodsOptions = {}): Promise<PodListResult> {
    for (let attempt = 0;; attempt++) {
      const items: Pod[] = [];
      let resourceVersion: string | undefined;
      let cont: string | undefined;
      let pages = 0;
      try {
        do {
          const params: Record<string, string> = {};
          if (opts.fieldSelector) params.fieldSelector = opts.fieldSelector;
          if (opts.limit) params.limit = String(opts.limit);
          if (cont) params.continue = cont;
          const list = await this.#getJson<PodList>("/api/v1/pods", params, opts.signal);
          pages++;
          if (!Array.isArray(list.items)) {
            throw new KubeProtocolError(`list of pods from ${this.server}: the answer has no items list`);
          }
          items.push(...list.items);
          // Every page of one list carries the resourceVersion of the first page's snapshot.
          resourceVersion ??= list.metadata?.resourceVersion;
          cont = list.metadata?.continue || undefined;
        } while (cont);
      } catch (e) {
        if (cont && e instanceof KubeApiError && e.expired && attempt < MAX_LIST_RESTARTS) continue;
        throw e;
      }
      if (!resourceVersion) {
        throw new KubeProtocolError(`list of pods from ${this.server}: the answer has no resourceVersion`);
      }
      return { items, resourceVersion, pages };
    }
  }

  /** One pod, or undefined when it does not exist. */
  async getPod(namespace: string, name: string, signal?: AbortSignal): Promise<Pod | undefined> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
    try {
      return await this.#getJson<Pod>(path, {}, signal);
    } catch (e) {
      if (e instanceof KubeApiError && e.code === 404) return undefined;
      throw e;
    }
  }

  /**
   * Watches pods from `resourceVersion`, with bookmarks. Ends when the server ends the stream; throws
   * KubeApiError for an ERROR event (`expired` for 410), KubeProtocolError for a line that is not an
   * event, KubeRequestError for a dropped or silent connection.
   */
  async *watchPods(opts: WatchPodsOptions): AsyncGenerator<PodWatchEvent> {
    const params: Record<string, string> = {
      watch: "true",
      allowWatchBookmarks: "true",
      resourceVersion: opts.resourceVersion,
    };
    if (opts.fieldSelector) params.fieldSelector = opts.fieldSelector;
    if (opts.timeoutSeconds) params.timeoutSeconds = String(opts.timeoutSeconds);
    const idleMs = opts.idleTimeoutMs ?? (opts.timeoutSeconds ?? 0) * 1000 + this.#timeoutMs;

    const req = this.#begin(opts.signal);
    try {
      const res = await this.#fetch("/api/v1/pods", params, req);
      await this.#check(res, "watch of pods");
      if (!res.body) throw new KubeRequestError(`watch of pods on ${this.server}: the answer has no body`);
      req.arm(idleMs, `watch of pods on ${this.server} was silent for ${idleMs} ms`);
      try {
        for await (const line of readLines(res.body)) {
          req.arm(idleMs, `watch of pods on ${this.server} was silent for ${idleMs} ms`);
          yield parseEvent(line, this.server);
        }
      } catch (e) {
        throw req.explain(e, this.server, this.#conn.insecureSkipTlsVerify);
      }
    } finally {
      req.end();
    }
  }

  async #getJson<T>(path: string, params: Record<string, string>, signal?: AbortSignal): Promise<T> {
    const req = this.#begin(signal);
    try {
      const res = await this.#fetch(path, params, req);
      await this.#check(res, `GET ${path}`);
      let text: string;
      try {
        text = await res.text();
      } catch (e) {
        throw req.explain(e, this.server, this.#conn.insecureSkipTlsVerify);
      }
      try {
        return JSON.parse(text) as T;
      } catch {
        throw new KubeProtocolError(`GET ${path} on ${this.server}: the answer is not JSON: ${clip(text)}`);
      }
    } finally {
      req.end();
    }
  }

  #begin(signal?: AbortSignal): InFlight {
    const r = new InFlight(signal);
    r.arm(this.#timeoutMs, `request to ${this.server} got no answer within ${this.#timeoutMs} ms`);
    return r;
  }

  async #fetch(path: string, params: Record<string, string>, req: InFlight): Promise<Response> {
    const qs = new URLSearchParams(params).toString();
    const url = `${this.server}${path}${qs ? `?${qs}` : ""}`;
    const headers: Record<string, string> = {
      Accept: "application/json",
      "User-Agent": `merbridge/${VERSION}`,
    };
    const token = await this.#conn.token?.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      return await fetch(url, { headers, signal: req.signal, client: this.#http });
    } catch (e) {
      throw req.explain(e, this.server, this.#conn.insecureSkipTlsVerify);
    }
  }

  async #check(res: Response, what: string): Promise<void> {
    if (res.ok) return;
    const text = await res.text().catch(() => "");
    let status: Status | undefined;
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === "object" && parsed.kind === "Status") status = parsed as Status;
    } catch { /* not a Status: the raw text goes into the message */ }
    if (res.status === 401) this.#conn.token?.invalidate();
    const detail = status?.message ?? clip(text);
    throw new KubeApiError(
      res.status,
      status?.reason,
      `${what} on ${this.server}: ${res.status} ${res.statusText}${detail ? `: ${detail}` : ""}`,
    );
  }
}

/**
 * The life of one request: an abort controller linked to the caller's signal, and a deadline that can
 * be re-armed (first for the answer, then for each line of a watch).
 */
class InFlight {
  readonly #ctl = new AbortController();
  readonly #outer?: AbortSignal;
  readonly #onOuterAbort = () => this.#ctl.abort(this.#outer?.reason);
  #timer?: ReturnType<typeof setTimeout>;
  #timedOut?: string;

  constructor(outer?: AbortSignal) {
    this.#outer = outer;
    if (outer?.aborted) this.#ctl.abort(outer.reason);
    else outer?.addEventListener("abort", this.#onOuterAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.#ctl.signal;
  }

  arm(ms: number, why: string): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timedOut = why;
      this.#ctl.abort(new KubeRequestError(why));
    }, ms);
  }

  end(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#outer?.removeEventListener("abort", this.#onOuterAbort);
    // Whatever is still open for this request (a watch body left mid-stream) is dropped.
    if (!this.#ctl.signal.aborted) this.#ctl.abort();
  }

  /** Turns what fetch threw into the error the caller should see. */
  explain(e: unknown, server: string, insecure: boolean): unknown {
    if (this.#outer?.aborted) return this.#outer.reason ?? e;
    if (this.#timedOut) return new KubeRequestError(this.#timedOut, { cause: e });
    if (e instanceof KubeApiError || e instanceof KubeProtocolError || e instanceof KubeRequestError) {
      return e;
    }
    const msg = e instanceof Error ? e.message : String(e);
    const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message}` : "";
    let hint = "";
    if (insecure && /certificate|tls|ssl|issuer/i.test(msg + cause)) {
      hint = " (the kubeconfig sets insecure-skip-tls-verify, which is only honoured when the runtime " +
        "is started with --unsafely-ignore-certificate-errors; give certificate-authority instead)";
    }
    return new KubeRequestError(`request to ${server} failed: ${msg}${cause}${hint}`, { cause: e });
  }
}

function parseEvent(line: string, server: string): PodWatchEvent {
  let ev: unknown;
  try {
    ev = JSON.parse(line);
  } catch {
    throw new KubeProtocolError(`watch of pods on ${server}: a line that is not JSON: ${clip(line)}`);
  }
  const { type, object } = (ev ?? {}) as { type?: unknown; object?: unknown };
  if (typeof type !== "string" || typeof object !== "object" || object === null) {
    throw new KubeProtocolError(
      `watch of pods on ${server}: a line that is not a watch event: ${clip(line)}`,
    );
  }
  switch (type) {
    case "ADDED":
    case "MODIFIED":
    case "DELETED":
    case "BOOKMARK":
      return { type, object: object as Pod };
    case "ERROR": {
      const s = object as Status;
      const code = typeof s.code === "number" ? s.code : 500;
      throw new KubeApiError(
        code,
        s.reason,
        `watch of pods on ${server}: ERROR event ${code}${s.reason ? ` ${s.reason}` : ""}: ${
          s.message ?? ""
        }`,
      );
    }
    default:
      throw new KubeProtocolError(`watch of pods on ${server}: unknown event type ${JSON.stringify(type)}`);
  }
}

function clip(s: string, n = 200): string {
  const t = s.trim();
  return t.length > n ? `${t.slice(0, n)}...` : t;
}
