// Reading a BPF ring buffer map through libbpf. The sample callback runs synchronously inside
// ring_buffer__poll on the calling thread, so a JavaScript callback (Deno.UnsafeCallback) is safe; the
// record is copied out before the callback returns, since the kernel reuses the space afterwards.
import { checkLibbpf, checkLibbpfPtr } from "../ffi/errors.ts";
import { libbpf } from "../ffi/library.ts";

const SAMPLE_FN = {
  parameters: ["pointer", "pointer", "usize"], // void *ctx, void *data, size_t size
  result: "i32",
} as const satisfies Deno.UnsafeCallbackDefinition;

export class RingBuffer implements Disposable {
  #rb: Deno.PointerObject | null;
  #cb: Deno.UnsafeCallback<typeof SAMPLE_FN>;

  /** `onRecord` gets a copy of each record. */
  constructor(mapFd: number, onRecord: (record: Uint8Array) => void) {
    this.#cb = new Deno.UnsafeCallback(SAMPLE_FN, (_ctx, data, size) => {
      if (data === null) return 0;
      const n = Number(size);
      onRecord(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(data, n).slice(0)));
      return 0;
    });
    try {
      this.#rb = checkLibbpfPtr(
        "ring_buffer__new",
        libbpf().ring_buffer__new(mapFd, this.#cb.pointer, null, null),
      );
    } catch (e) {
      this.#cb.close();
      throw e;
    }
  }

  /** Waits up to `timeoutMs` for records and delivers them; returns how many. Blocks the thread. */
  poll(timeoutMs: number): number {
    if (this.#rb === null) throw new Error("ring buffer closed");
    const n = libbpf().ring_buffer__poll(this.#rb, timeoutMs);
    // EINTR: a signal arrived while waiting; the caller's loop decides what to do.
    if (n === -4) return 0;
    return checkLibbpf("ring_buffer__poll", n);
  }

  close(): void {
    if (this.#rb !== null) libbpf().ring_buffer__free(this.#rb);
    this.#rb = null;
    this.#cb.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
