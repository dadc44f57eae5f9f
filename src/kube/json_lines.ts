// Splits a byte stream into text lines. A watch stream is newline-delimited JSON sent in HTTP chunks
// whose boundaries have nothing to do with the lines: a line (or a multi-byte character) can be cut
// anywhere, and one chunk can carry many lines.

export class LineTooLongError extends Error {
  constructor(readonly limit: number) {
    super(`a line longer than ${limit} characters without a newline`);
    this.name = "LineTooLongError";
  }
}

/**
 * Yields each complete line of `body` without its terminator (LF or CRLF); blank lines are skipped. A
 * last line without a terminator is yielded when the stream ends cleanly. Errors of the stream (a dropped
 * connection, an abort) propagate to the caller; the reader is released when iteration stops early.
 * A line growing past `maxLine` characters throws LineTooLongError rather than eating memory (a proxy
 * answering with an endless page instead of events).
 */
export async function* readLines(
  body: ReadableStream<Uint8Array>,
  maxLine = 64 * 1024 * 1024,
): AsyncGenerator<string> {
  const decoder = new TextDecoder("utf-8", { fatal: false });
  const chunks = chunkReader(body);
  let pending = "";
  let finished = false;
  try {
    while (true) {
      const { value, done } = await chunks.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = stripCr(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        if (line.trim() !== "") yield line;
      }
      if (pending.length > maxLine) throw new LineTooLongError(maxLine);
    }
    pending += decoder.decode();
    finished = true;
    const last = stripCr(pending);
    if (last.trim() !== "") yield last;
  } finally {
    // Cancelling tells fetch to drop the connection instead of draining a watch that may never end.
    if (!finished) await chunks.reader.cancel().catch(() => {});
    chunks.reader.releaseLock();
  }
}

function stripCr(s: string): string {
  return s.endsWith("\r") ? s.slice(0, -1) : s;
}

const CHUNK = 64 * 1024;

/**
 * Reads `body` chunk by chunk into one buffer of ours when it is a byte stream (fetch bodies are). A
 * default reader of a byte stream allocates a new 64 KiB buffer for every chunk, however small: a
 * watch event is one chunk, and the buffers, outside V8's heap, waited for a garbage collection that
 * external memory only forces at 64 MiB, so 1000 pod events grew the daemon by 30 MiB.
 */
function chunkReader(body: ReadableStream<Uint8Array>): {
  reader: ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader;
  read(): Promise<ReadableStreamReadResult<Uint8Array>>;
} {
  let byob: ReadableStreamBYOBReader;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    const reader = body.getReader();
    return { reader, read: () => reader.read() };
  }
  let buf = new ArrayBuffer(CHUNK);
  return {
    reader: byob,
    async read() {
      // The view handed back is valid until the next read, which takes its buffer over: the caller
      // decodes each chunk before asking for the next.
      const r = await byob.read(new Uint8Array(buf, 0, CHUNK));
      if (r.value) buf = r.value.buffer as ArrayBuffer;
      return r as ReadableStreamReadResult<Uint8Array>;
    },
  };
}
