// Everything the testbed builds is registered on a Scope and undone in reverse order when it ends,
// whether the caller passed or threw. A failed cleanup step is recorded, not thrown, so that every later
// step still runs and the failure that ended the scope is the one reported.

export class Scope extends AsyncDisposableStack {
  readonly errors: unknown[] = [];

  /** Runs `fn` when the scope ends; what it throws lands in `errors`. */
  override defer(fn: () => unknown): void {
    super.defer(async () => {
      try {
        await fn();
      } catch (e) {
        this.errors.push(e);
      }
    });
  }
}
