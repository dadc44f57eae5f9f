// Pods from a YAML file (Pod, PodList or List documents, several per file), for nodes without an API
// server and for tests. The file is watched through its directory so that editors and `kubectl get -o
// yaml >` rewrites (rename over, truncate and write) are both seen.
import { loadAll } from "js-yaml";
import { getLogger } from "../log/logger.ts";
import type { Pod, PodSource, PodSourceStats } from "./source.ts";
import { isRecord } from "../util/record.ts";

const log = getLogger("pods");

export class PodsFileError extends Error {
  constructor(path: string, message: string) {
    super(`pods file ${path}: ${message}`);
    this.name = "PodsFileError";
  }
}

/** Parses the file's text into pods; throws PodsFileError naming the document that is wrong. */
export function parsePodsYaml(path: string, text: string): Pod[] {
  let docs: unknown[];
  try {
    docs = loadAll(text);
  } catch (e) {
    throw new PodsFileError(path, `not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
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

  constructor(readonly path: string, readonly nodeName: string) {
    this.description = `file ${path}`;
  }

  #read(): boolean {
    const text = Deno.readTextFileSync(this.path);
    if (text === this.#last && this.#stats.lists > 0) return false;
    const pods = podsOfNode(parsePodsYaml(this.path, text), this.nodeName);
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
    this.#watcher = Deno.watchFs(dir, { recursive: false });
    (async () => {
      try {
        for await (const _ev of this.#watcher!) {
          clearTimeout(this.#timer);
          this.#timer = setTimeout(() => this.#reload(), 50);
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
