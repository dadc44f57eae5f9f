// How big the connection tables are. A node's concurrent connections grow with what it can run, and
// its memory is the best single measure of that the agent can read; the tables allocate entries only
// when used (BPF_F_NO_PREALLOC), so a generous capacity costs only its hash buckets (16 bytes per slot).

const MIN_CONN = 65536;
const MAX_CONN = 1 << 20;
/** One slot per this much memory: 24 GiB gives 524,288 slots (8 MiB of buckets per table). */
const BYTES_PER_CONN = 32 * 1024;

/** The connection-table capacity for a node with `memBytes` of memory: a power of two in 64 Ki..1 Mi. */
export function connTableSizeFor(memBytes: number): number {
  const want = Math.max(MIN_CONN, Math.min(MAX_CONN, Math.floor(memBytes / BYTES_PER_CONN)));
  return 2 ** Math.floor(Math.log2(want));
}

/** MemTotal from /proc/meminfo, in bytes. */
export function nodeMemoryBytes(meminfo = Deno.readTextFileSync("/proc/meminfo")): number {
  const m = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo);
  if (!m) throw new Error("no MemTotal line in /proc/meminfo");
  return Number(m[1]) * 1024;
}
