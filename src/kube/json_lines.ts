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
  const reader = body.getReader();
  let pending = "";
  let finished = false;
  try {
    while (true) {
      const { value, done } = await reader.read();
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
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function stripCr(s: string): string {
  return s.endsWith("\r") ? s.slice(0, -1) : s;
}
