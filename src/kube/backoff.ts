// Retry delays for talking to the API server. Every node agent of a cluster sees the same API server
// outage at the same moment; without jitter they would all come back in lock-step and hammer it again.

export interface BackoffOptions {
  /** First delay. */
  initialMs: number;
  /** Ceiling for the delay before jitter. */
  maxMs: number;
  /** Uniform random in [0, 1); injectable for tests. */
  random?: () => number;
}

export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #random: () => number;
  #failures = 0;

  constructor(opts: BackoffOptions) {
    if (!(opts.initialMs > 0) || !(opts.maxMs >= opts.initialMs)) {
      throw new RangeError(
        `backoff: need 0 < initialMs <= maxMs, got initialMs=${opts.initialMs} maxMs=${opts.maxMs}`,
      );
    }
    this.#initial = opts.initialMs;
    this.#max = opts.maxMs;
    this.#random = opts.random ?? Math.random;
  }

  /** Failures since the last reset. */
  get failures(): number {
    return this.#failures;
  }

  /**
   * The delay before the next attempt: doubling from initialMs up to maxMs, then drawn uniformly from
   * the upper half of that, so a delay never collapses to nothing.
   */
  next(): number {
    const ceiling = Math.min(this.#max, this.#initial * 2 ** Math.min(this.#failures, 52));
    this.#failures++;
    return Math.round(ceiling / 2 + this.#random() * (ceiling / 2));
  }

  reset(): void {
    this.#failures = 0;
  }
}
