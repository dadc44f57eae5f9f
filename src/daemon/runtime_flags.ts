// V8 flags the daemon runs with: baked into the compiled executable (deno.json "compile") and given to
// `deno run` wherever the daemon runs from source (the testbed), so both measure the same.
//
// --max-semi-space-size=1: V8 grows the young generation up to 16 MiB under allocation bursts (a pods
// file or an API relist of a thousand pods is parsed in one go) and keeps it: measured, the daemon with
// 1000 pods held 31 MiB of V8 heap of which 15 MiB were in use, 97 MiB RSS. A 1 MiB semi-space bounds
// that slack: 16 MiB of heap, 83 MiB RSS, the sync of the 1000 pods no slower. The cost is more frequent
// scavenges, each well under a millisecond at this size.
//
// --single-threaded --no-opt: V8's background compiler and GC threads each keep a malloc arena and a
// stack, and the optimizing compiler's runs (a start hashes the BPF objects, a relist parses a thousand
// pods) leave megabytes of its zones behind in them; the daemon's JavaScript is a control plane whose
// bursts are over before optimized code would pay for its compilation. Measured with `deno task bench
// --only control`, two runs each: RSS idle 67.6 -> 64.2 MiB, after a restart 64.2 -> 60.4, with 1000 pods
// 77.7 -> 71.0; restart with 30 pods to ready 262 -> 172 ms; 1000 pods into the maps 204 -> 131 ms; one
// pod change with 1000 pods unchanged (9-10 ms p50, 21-29 ms p99).
export const DAEMON_V8_FLAGS = "--max-semi-space-size=1,--single-threaded,--no-opt";
