// V8 flags the daemon runs with: baked into the compiled executable (deno.json "compile") and given to
// `deno run` wherever the daemon runs from source (the testbed), so both measure the same.
//
// V8 grows the young generation up to 16 MiB under allocation bursts (a pods file or an API relist of
// a thousand pods is parsed in one go) and keeps it: measured, the daemon with 1000 pods held 31 MiB of
// V8 heap of which 15 MiB were in use, 97 MiB RSS. A 1 MiB semi-space bounds that slack: 16 MiB of heap,
// 83 MiB RSS, the sync of the 1000 pods no slower (250-320 ms either way), idle 68 -> 66 MiB. The cost is
// more frequent scavenges, each well under a millisecond at this size.
export const DAEMON_V8_FLAGS = "--max-semi-space-size=1";
