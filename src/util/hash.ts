// A 64-bit fingerprint of some bytes, for telling one build's artifacts from another's (not for
// security: whoever could forge it is root on the node already). Written here rather than taken from
// node:crypto, whose import alone costs the daemon's start 25-60 ms.

/** Two independent multiply-xorshift lanes over 32-bit words, as 16 hex digits. */
export function fingerprint(chunks: readonly Uint8Array[]): string {
  // The state stays in this function's locals: kept in a closure, each step's value would be a heap
  // number, and a megabyte of input left megabytes of garbage in the daemon's heap.
  let a = 0x811c9dc5 | 0, b = 0x6a09e667 | 0;
  for (const c of chunks) {
    const whole = c.byteLength >>> 2;
    const words = c.byteOffset % 4 === 0
      ? new Uint32Array(c.buffer, c.byteOffset, whole)
      : new Uint32Array(c.slice(0, whole * 4).buffer);
    let tail = 0;
    for (let i = whole * 4; i < c.byteLength; i++) tail = (tail << 8) | c[i]!;
    // The tail and the length go in too, so chunks that differ only in where they split do not collide.
    for (let i = 0; i < whole + 2; i++) {
      const w = i < whole ? words[i]! : i === whole ? tail : c.byteLength;
      a = Math.imul(a ^ w, 0x01000193);
      a ^= a >>> 13;
      b = Math.imul(b ^ w, 0x5bd1e995);
      b ^= b >>> 15;
    }
  }
  return (a >>> 0).toString(16).padStart(8, "0") + (b >>> 0).toString(16).padStart(8, "0");
}
