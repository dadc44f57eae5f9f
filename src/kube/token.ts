// Bearer tokens for the API server. Projected service-account tokens are short-lived: the kubelet
// rewrites the file well before expiry, so a token read once at start-up stops working after about an
// hour. The file is therefore re-read when the copy in memory is older than a limit, and at once after
// the API server refused it.

/** Where a bearer token comes from. */
export interface TokenSource {
  /** The token to send now; undefined when there is none. */
  token(): Promise<string | undefined>;
  /** Forgets the cached token so that the next `token()` reads it afresh (after a 401). */
  invalidate(): void;
  /** For logs: where the token comes from, never the token itself. */
  readonly description: string;
}

export class TokenFileError extends Error {
  constructor(readonly path: string, cause: unknown) {
    super(`token file ${path}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "TokenFileError";
  }
}

/** A token fixed in the configuration. */
export class StaticToken implements TokenSource {
  readonly description = "static token";
  constructor(readonly value: string) {}
  token(): Promise<string | undefined> {
    return Promise.resolve(this.value);
  }
  invalidate(): void {}
}

export interface FileTokenOptions {
  /** Re-read the file when the cached token is older than this; default 60 s. */
  maxAgeMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

/** A token re-read from a file (service-account token, kubeconfig tokenFile). */
export class FileToken implements TokenSource {
  readonly description: string;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  #value?: string;
  #readAt = 0;
  /** Number of times the file was read, for tests and debugging. */
  reads = 0;

  constructor(readonly path: string, opts: FileTokenOptions = {}) {
    this.description = `token file ${path}`;
    this.#maxAgeMs = opts.maxAgeMs ?? 60_000;
    this.#now = opts.now ?? Date.now;
  }

  async token(): Promise<string | undefined> {
    const now = this.#now();
    if (this.#value !== undefined && now - this.#readAt < this.#maxAgeMs) return this.#value;
    let text: string;
    try {
      text = await Deno.readTextFile(this.path);
    } catch (e) {
      // A rotation in progress can briefly leave no file; an older token is better than none.
      if (this.#value !== undefined) return this.#value;
      throw new TokenFileError(this.path, e);
    }
    this.reads++;
    const value = text.trim();
    if (value === "") {
      if (this.#value !== undefined) return this.#value;
      throw new TokenFileError(this.path, "the file is empty");
    }
    this.#value = value;
    this.#readAt = now;
    return value;
  }

  invalidate(): void {
    this.#readAt = Number.NEGATIVE_INFINITY;
  }
}
