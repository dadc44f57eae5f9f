// Running code inside another network namespace. setns(2) moves only the calling thread, and Deno runs
// async ops on other threads, so the callback must be synchronous: sync FFI calls, Deno.listen and
// spawned children see the pod's namespace; anything awaited would not. The thread always goes back.
import { CLONE_NEWNET, closeFd, O_RDONLY, openFd, setnsFd } from "../ffi/libc.ts";

export class NetnsError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NetnsError";
  }
}

export function withNetns<T>(netnsPath: string, fn: () => T): T {
  if (typeof fn !== "function") throw new TypeError("withNetns needs a function");
  let target: number;
  try {
    target = openFd(netnsPath, O_RDONLY);
  } catch (e) {
    throw new NetnsError(`cannot open network namespace ${netnsPath}: ${(e as Error).message}`, { cause: e });
  }
  let home: number | undefined;
  try {
    home = openFd("/proc/thread-self/ns/net", O_RDONLY);
    setnsFd(target, CLONE_NEWNET);
    try {
      const out = fn();
      if (out instanceof Promise) {
        throw new NetnsError(
          "withNetns callbacks must be synchronous (async work runs in the host namespace)",
        );
      }
      return out;
    } finally {
      // If this fails the thread is stranded in the pod's namespace; nothing after it would be safe.
      try {
        setnsFd(home, CLONE_NEWNET);
      } catch (e) {
        console.error(`fatal: cannot return to the host network namespace: ${(e as Error).message}`);
        Deno.exit(70);
      }
    }
  } finally {
    closeFd(target);
    if (home !== undefined) closeFd(home);
  }
}
