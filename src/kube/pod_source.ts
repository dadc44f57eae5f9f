// The pods of this node from the Kubernetes API: one list, then a watch kept running for as long as the
// agent lives. The set in memory is only ever replaced by a complete list or changed by events in
// resourceVersion order, so every snapshot handed out is a state the API server actually had.
import { getLogger } from "../log/logger.ts";
import { type Pod, type PodSource, type PodSourceStats, slimPod } from "../pods/source.ts";
import { Backoff } from "./backoff.ts";
import { sleep } from "../util/sleep.ts";
import { KubeApiError, KubeClient, type PodWatchEvent } from "./client.ts";
import type { KubeConnection } from "./config.ts";

const log = getLogger("kube");

export interface KubePodSourceOptions {
  config: KubeConnection;
  /** This node: only pods with spec.nodeName equal to it are listed and watched. */
  nodeName: string;
  /** Limit for a request to be answered; default 30 s. */
  fetchTimeoutMs?: number;
  /** Delays between failed attempts; default 500 ms doubling up to 30 s, with jitter. */
  backoff?: { initialMs: number; maxMs: number };
  /** How long the server keeps one watch open before it ends it; default 300 s, plus up to 100 % jitter. */
  watchTimeoutSeconds?: number;
  /** Pods per list page; default 500. */
  pageSize?: number;
  /**
   * At most one snapshot per this long; default 50 ms. A change after a quiet spell goes out at
   * once, with the events read along with it; a burst of changes goes out together.
   */
  debounceMs?: number;
  /** Uniform random in [0, 1) for jitter; injectable for tests. */
  random?: () => number;
}

// A watch that ends cleanly this soon without a single event is a server refusing to hold it open;
// going straight back would loop as fast as the network allows.
const SHORT_WATCH_MS = 1000;

export class KubePodSource implements PodSource {
  readonly description: string;
  readonly #opts: KubePodSourceOptions;
  #client?: KubeClient;
  readonly #backoff: Backoff;
  readonly #selector: string;
  readonly #debounceMs: number;
  readonly #random: () => number;
  readonly #ctl = new AbortController();
  readonly #pods = new Map<string, Pod>();
  #stats: PodSourceStats = { lists: 0, watchRestarts: 0, errors: 0, lastSyncMs: 0 };
  #resourceVersion = "";
  #watches = 0;
  /** 410s in a row without an event in between. */
  #expiredRun = 0;
  #lastSignature = "";
  #onSnapshot?: (pods: Pod[]) => void;
  #debounce?: ReturnType<typeof setTimeout>;
  /** performance.now() when the last snapshot went out. */
  #lastEmit = -Infinity;
  #loop?: Promise<void>;
  #started = false;
  #stopped = false;

  constructor(opts: KubePodSourceOptions) {
    if (!opts.nodeName) throw new RangeError("kubernetes pod source: the node name is empty");
    this.#opts = opts;
    this.#random = opts.random ?? Math.random;
    this.#backoff = new Backoff({
      initialMs: opts.backoff?.initialMs ?? 500,
      maxMs: opts.backoff?.maxMs ?? 30_000,
      random: this.#random,
    });
    this.#selector = `spec.nodeName=${opts.nodeName}`;
    this.#debounceMs = opts.debounceMs ?? 50;
    this.description = `kubernetes ${opts.config.server}`;
  }

  /** The resourceVersion the next watch starts from. */
  get resourceVersion(): string {
    return this.#resourceVersion;
  }

  async start(onSnapshot: (pods: Pod[]) => void): Promise<void> {
    if (this.#started) throw new Error("kubernetes pod source: start() was already called");
    if (this.#stopped) throw new Error("kubernetes pod source: start() after stop()");
    this.#started = true;
    this.#onSnapshot = onSnapshot;
    try {
      await this.#list();
    } catch (e) {
      // The caller may try again later; nothing stays open meanwhile.
      this.#stats.errors++;
      this.#started = false;
      this.#client?.close();
      this.#client = undefined;
      throw e;
    }
    this.#emit();
    log.info("listed {n} pods of node {node} from {server} at resourceVersion {rv}", {
      n: this.#pods.size,
      node: this.#opts.nodeName,
      server: this.#opts.config.server,
      rv: this.#resourceVersion,
    });
    this.#loop = this.#run();
  }

  async get(namespace: string, name: string): Promise<Pod | undefined> {
    if (this.#stopped) throw new Error("kubernetes pod source: get() after stop()");
    try {
      const p = await this.#api().getPod(namespace, name, this.#ctl.signal);
      return p && slimPod(p);
    } catch (e) {
      if (!this.#ctl.signal.aborted) this.#stats.errors++;
      throw e;
    }
  }

  stats(): PodSourceStats {
    return { ...this.#stats };
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#ctl.abort();
    clearTimeout(this.#debounce);
    this.#debounce = undefined;
    await this.#loop;
    this.#client?.close();
    this.#client = undefined;
  }

  #api(): KubeClient {
    return this.#client ??= new KubeClient(this.#opts.config, {
      requestTimeoutMs: this.#opts.fetchTimeoutMs,
    });
  }

  async #run(): Promise<void> {
    const signal = this.#ctl.signal;
    let needList = false;
    while (!signal.aborted) {
      let delay = 0;
      try {
        if (needList) {
          await this.#list();
          needList = false;
          this.#emitIfChanged();
        }
        const started = Date.now();
        const events = await this.#watch();
        if (events === 0 && Date.now() - started < SHORT_WATCH_MS) {
          delay = this.#backoff.next();
          log.warn("watch of pods on {server} ended at once; again in {delay} ms", {
            server: this.#opts.config.server,
            delay,
          });
        } else {
          this.#backoff.reset();
        }
      } catch (e) {
        if (signal.aborted) break;
        if (e instanceof KubeApiError && e.expired) {
          // The server no longer has our resourceVersion: only a fresh list is a consistent state.
          // Straight away the first time; a fresh list expiring again at once is a server in trouble.
          needList = true;
          delay = ++this.#expiredRun > 1 ? this.#backoff.next() : 0;
          log.info("resourceVersion {rv} expired ({error}); listing again", {
            rv: this.#resourceVersion,
            error: e.message,
          });
        } else {
          this.#stats.errors++;
          delay = this.#backoff.next();
          log.error("{error}; keeping the last {n} pods, retrying in {delay} ms", {
            error: e instanceof Error ? e.message : String(e),
            n: this.#pods.size,
            delay,
          });
        }
      }
      if (delay > 0) await sleep(delay, signal);
    }
  }

  async #list(): Promise<void> {
    const res = await this.#api().listPods({
      fieldSelector: this.#selector,
      limit: this.#opts.pageSize ?? 500,
      signal: this.#ctl.signal,
    });
    this.#pods.clear();
    for (const p of res.items) {
      if (this.#ours(p)) this.#pods.set(keyOf(p), slimPod(p));
    }
    this.#resourceVersion = res.resourceVersion;
    this.#stats.lists++;
  }

  /** Runs one watch to its end; returns how many events it carried. */
  async #watch(): Promise<number> {
    if (this.#watches++ > 0) this.#stats.watchRestarts++;
    const base = this.#opts.watchTimeoutSeconds ?? 300;
    const timeoutSeconds = Math.max(1, Math.round(base * (1 + this.#random())));
    log.debug("watching pods from resourceVersion {rv}", { rv: this.#resourceVersion });
    let n = 0;
    for await (
      const ev of this.#api().watchPods({
        fieldSelector: this.#selector,
        resourceVersion: this.#resourceVersion,
        timeoutSeconds,
        signal: this.#ctl.signal,
      })
    ) {
      n++;
      this.#backoff.reset();
      this.#expiredRun = 0;
      this.#apply(ev);
    }
    return n;
  }

  #apply(ev: PodWatchEvent): void {
    const rv = ev.object.metadata?.resourceVersion;
    if (ev.type === "BOOKMARK") {
      if (rv) this.#resourceVersion = rv;
      return;
    }
    const key = keyOf(ev.object);
    if (ev.type === "DELETED") this.#pods.delete(key);
    else if (this.#ours(ev.object)) this.#pods.set(key, slimPod(ev.object));
    if (rv) this.#resourceVersion = rv;
    this.#schedule();
  }

  // The field selector already filters on the server; this guards against a proxy or an old server
  // that ignored it, which would otherwise put every pod of the cluster into this node's maps.
  #ours(p: Pod): boolean {
    return p.spec?.nodeName === this.#opts.nodeName;
  }

  #schedule(): void {
    if (this.#debounce !== undefined) return;
    // A timer even when no wait is due: the rest of the chunk just read (a burst of events arrives
    // as one) is applied first, in the same turn, and goes out in the same snapshot.
    const wait = Math.max(0, this.#lastEmit + this.#debounceMs - performance.now());
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#emit();
    }, wait);
  }

  #emitIfChanged(): void {
    if (signature(this.#pods) !== this.#lastSignature) this.#emit();
  }

  #emit(): void {
    clearTimeout(this.#debounce);
    this.#debounce = undefined;
    this.#lastSignature = signature(this.#pods);
    this.#lastEmit = performance.now();
    this.#stats.lastSyncMs = Date.now();
    try {
      this.#onSnapshot?.([...this.#pods.values()]);
    } catch (e) {
      // The consumer's failure must not stop the watch: the next change gives it another chance.
      log.error("handling a snapshot of {n} pods failed: {error}", {
        n: this.#pods.size,
        error: e instanceof Error ? e.message : String(e),
      });
    }
  }
}

function keyOf(p: Pod): string {
  return p.metadata?.uid ?? `${p.metadata?.namespace ?? "default"}/${p.metadata?.name ?? ""}`;
}

function signature(pods: Map<string, Pod>): string {
  return [...pods.entries()].map(([k, p]) => `${k}@${p.metadata?.resourceVersion ?? ""}`).sort().join(",");
}
