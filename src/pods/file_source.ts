// Pods from a YAML file (Pod, PodList or List documents, several per file), for nodes without an API
// server and for tests. The file is watched through its directory so that editors and `kubectl get -o
// yaml >` rewrites (rename over, truncate and write) are both seen.
import { loadAll } from "js-yaml";
import { getLogger } from "../log/logger.ts";
import { type Pod, type PodSource, type PodSourceStats, slimPod } from "./source.ts";
import { isRecord } from "../util/record.ts";

const log = getLogger("pods");

export class PodsFileError extends Error {
  constructor(path: string, message: string) {
    super(`pods file ${path}: ${message}`);
    this.name = "PodsFileError";
  }
}

/** A line that starts a document ("---" alone or before content) or ends one ("..."). */
const DOC_MARKER = /^(?:---|\.\.\.)(?=[ \t\r]|$)/gm;

/**
 * The text cut at its document-start lines, each piece with the marker that opens it. Such a line is
 * a document boundary wherever it is (YAML forbids it inside any scalar), so each piece parses alone
 * as it would within the whole; directives ("%YAML") bind to what follows and are not cut.
 */
export function documentPieces(text: string): string[] | undefined {
  if (/^%/m.test(text)) return undefined;
  const starts: number[] = [];
  for (const m of text.matchAll(DOC_MARKER)) if (m[0] === "---") starts.push(m.index);
  const out: string[] = [];
  let from = 0;
  for (const at of starts) {
    if (at > from) out.push(text.slice(from, at));
    from = at;
  }
  out.push(text.slice(from));
  return out;
}

/** Parsed pieces of the last text, by piece text: an edit of one pod re-parses that pod only. */
export type PieceCache = Map<string, unknown[]>;

/** A document as the daemon keeps it: its pods slimmed (slimPod), anything else as it came. */
function slimDocument(doc: unknown): unknown {
  if (!isRecord(doc)) return doc;
  if (doc.kind === "Pod") return slimPod(doc as Pod);
  if ((doc.kind === "PodList" || doc.kind === "List") && Array.isArray(doc.items)) {
    const items = doc.items.map((it) =>
      isRecord(it) && (it.kind === undefined || it.kind === "Pod") ? slimPod(it as Pod) : it
    );
    return { kind: doc.kind, items };
  }
  return doc;
}

function loadDocuments(path: string, text: string, cache?: PieceCache): unknown[] {
  const whole = () => {
    try {
      return loadAll(text).map(slimDocument);
    } catch (e) {
      throw new PodsFileError(path, `not valid YAML: ${(e as Error).message.split("\n")[0]}`);
    }
  };
  const pieces = cache && documentPieces(text);
  if (!cache || !pieces) return whole();
  const next: PieceCache = new Map();
  const docs: unknown[] = [];
  for (const piece of pieces) {
    let got = cache.get(piece) ?? next.get(piece);
    if (!got) {
      try {
        got = loadAll(piece).map(slimDocument);
      } catch {
        // Reported as the whole file's parse reports it (its line numbers).
        return whole();
      }
    }
    next.set(piece, got);
    docs.push(...got);
  }
  cache.clear();
  for (const [k, v] of next) cache.set(k, v);
  return docs;
}

/**
 * Parses the file's text into pods; throws PodsFileError naming the document that is wrong. With a
 * cache, documents whose text did not change since the last call come back as the same objects.
 */
export function parsePodsYaml(path: string, text: string, cache?: PieceCache): Pod[] {
  const docs = loadDocuments(path, text, cache);
  const pods: Pod[] = [];
  docs.forEach((doc, i) => {
    if (doc === null || doc === undefined) return;
    if (typeof doc !== "object" || Array.isArray(doc)) {
      throw new PodsFileError(path, `document ${i + 1} is not a mapping`);
    }
    const d = doc as { kind?: unknown; items?: unknown };
    if (d.kind === "Pod") pods.push(checkPod(path, i, doc as Pod));
    else if (d.kind === "PodList" || d.kind === "List") {
      if (!Array.isArray(d.items)) {
        throw new PodsFileError(path, `document ${i + 1} (${d.kind}) has no items list`);
      }
      for (const it of d.items) {
        if ((it as { kind?: unknown })?.kind !== undefined && (it as { kind?: unknown }).kind !== "Pod") {
          continue;
        }
        pods.push(checkPod(path, i, it as Pod));
      }
    } else {
      throw new PodsFileError(
        path,
        `document ${i + 1} has kind ${JSON.stringify(d.kind)}, expected Pod, PodList or List`,
      );
    }
  });
  return pods;
}

/**
 * YAML reads `inject: true` or `port: 9090` as a boolean or a number where the API would hold a
 * string: such scalars are turned into the string the API would have; what cannot be (a list where
 * a map belongs) names the document.
 */
function checkPod(path: string, i: number, p: Pod): Pod {
  const where = `document ${i + 1}`;
  if (!isRecord(p)) throw new PodsFileError(path, `${where}: a pod that is not a mapping`);
  const meta = p.metadata as unknown;
  if (meta !== undefined && !isRecord(meta)) {
    throw new PodsFileError(path, `${where}: metadata is not a mapping`);
  }
  const m = (meta ?? {}) as Record<string, unknown>;
  for (const k of ["name", "namespace", "uid"]) {
    if (typeof m[k] === "number" || typeof m[k] === "boolean") m[k] = String(m[k]);
    if (m[k] !== undefined && m[k] !== null && typeof m[k] !== "string") {
      throw new PodsFileError(path, `${where}: metadata.${k} is not a string`);
    }
  }
  if (!m.name) throw new PodsFileError(path, `${where}: a pod without metadata.name`);
  for (const k of ["labels", "annotations"]) {
    const v = m[k];
    if (v === undefined || v === null) {
      delete m[k];
      continue;
    }
    if (!isRecord(v)) throw new PodsFileError(path, `${where} (${m.name}): metadata.${k} is not a mapping`);
    for (const [key, val] of Object.entries(v)) {
      if (typeof val === "string") continue;
      if (typeof val === "number" || typeof val === "boolean") v[key] = String(val);
      else if (val === null) v[key] = "";
      else throw new PodsFileError(path, `${where} (${m.name}): metadata.${k}.${key} is not a string`);
    }
  }
  return p;
}

export function podsOfNode(pods: Pod[], nodeName: string): Pod[] {
  return pods.filter((p) => !p.spec?.nodeName || p.spec.nodeName === nodeName);
}

export class FilePodSource implements PodSource {
  readonly description: string;
  #stats: PodSourceStats = { lists: 0, watchRestarts: 0, errors: 0, lastSyncMs: 0 };
  #watcher?: Deno.FsWatcher;
  #timer?: ReturnType<typeof setTimeout>;
  #last = "";
  #pods: Pod[] = [];
  #onSnapshot?: (pods: Pod[]) => void;
  readonly #pieces: PieceCache = new Map();

  constructor(readonly path: string, readonly nodeName: string) {
    this.description = `file ${path}`;
  }

  #read(): boolean {
    const text = Deno.readTextFileSync(this.path);
    if (text === this.#last && this.#stats.lists > 0) return false;
    const pods = podsOfNode(parsePodsYaml(this.path, text, this.#pieces), this.nodeName);
    this.#last = text;
    this.#pods = pods;
    this.#stats.lists++;
    this.#stats.lastSyncMs = Date.now();
    this.#onSnapshot?.(pods);
    return true;
  }

  start(onSnapshot: (pods: Pod[]) => void): Promise<void> {
    this.#onSnapshot = onSnapshot;
    try {
      this.#read(); // the first read must succeed: a daemon with a broken pods file should not start
    } catch (e) {
      return Promise.reject(
        e instanceof Deno.errors.NotFound ? new PodsFileError(this.path, "does not exist") : e,
      );
    }
    const dir = this.path.includes("/") ? this.path.slice(0, this.path.lastIndexOf("/")) || "/" : ".";
    const base = this.path.slice(this.path.lastIndexOf("/") + 1);
    this.#watcher = Deno.watchFs(dir, { recursive: false });
    (async () => {
      try {
        for await (const ev of this.#watcher!) {
          clearTimeout(this.#timer);
          // A file renamed into place, or closed after writing ("access"), is whole: read at once.
          // Anything else may be a write still going on: read once the writer has been quiet a while.
          const last = ev.paths.at(-1) ?? "";
          const whole = (ev.kind === "rename" || ev.kind === "access") &&
            last.slice(last.lastIndexOf("/") + 1) === base;
          this.#timer = setTimeout(() => this.#reload(), whole ? 0 : 50);
        }
      } catch (e) {
        if (this.#watcher) {
          log.error("watching {path} failed: {error}", { path: this.path, error: String(e) });
        }
      }
    })();
    return Promise.resolve();
  }

  #reload() {
    try {
      if (this.#read()) log.info("pods file changed: {n} pods of this node", { n: this.#pods.length });
    } catch (e) {
      this.#stats.errors++;
      // Keep serving the last good set: a half-written or broken file must not empty the maps.
      log.error("{error}; keeping the previous {n} pods", {
        error: (e as Error).message,
        n: this.#pods.length,
      });
    }
  }

  get(namespace: string, name: string): Promise<Pod | undefined> {
    try {
      this.#reload();
    } catch { /* reported by #reload */ }
    return Promise.resolve(
      this.#pods.find((p) => (p.metadata?.namespace ?? "default") === namespace && p.metadata?.name === name),
    );
  }

  stats(): PodSourceStats {
    return { ...this.#stats };
  }

  stop(): Promise<void> {
    clearTimeout(this.#timer);
    const w = this.#watcher;
    this.#watcher = undefined;
    w?.close();
    return Promise.resolve();
  }
}
