// Which program of which object goes where. The loader below stays generic; this table is the only
// place that knows the datapath's programs.
import type { MapName } from "../generated/bpf_types.ts";

export type CgroupHook =
  | "connect4"
  | "connect6"
  | "getsockopt"
  | "getpeername4"
  | "getpeername6"
  | "sockops"
  | "sendmsg4"
  | "sendmsg6"
  | "recvmsg4"
  | "recvmsg6";

export interface CgroupProgram {
  object: string;
  program: string;
  hook: CgroupHook;
  /** Only attached when the daemon runs with this feature on. */
  feature?: "dns-capture";
}

export const CGROUP_PROGRAMS: readonly CgroupProgram[] = [
  { object: "connect", program: "mb_connect4", hook: "connect4" },
  // AF_INET6 sockets reaching IPv4 peers as ::ffff:a.b.c.d (the JDK's default) are handled like AF_INET.
  { object: "connect", program: "mb_connect6", hook: "connect6" },
  { object: "origdst", program: "mb_getsockopt", hook: "getsockopt" },
  { object: "origdst", program: "mb_getpeername4", hook: "getpeername4" },
  { object: "origdst", program: "mb_getpeername6", hook: "getpeername6" },
  { object: "sockops", program: "mb_sockops", hook: "sockops" },
  { object: "dns", program: "mb_sendmsg4", hook: "sendmsg4", feature: "dns-capture" },
  { object: "dns", program: "mb_sendmsg6", hook: "sendmsg6", feature: "dns-capture" },
  { object: "dns", program: "mb_recvmsg4", hook: "recvmsg4", feature: "dns-capture" },
  { object: "dns", program: "mb_recvmsg6", hook: "recvmsg6", feature: "dns-capture" },
];

/** sk_msg verdict program, attached to the sockhash rather than a cgroup. */
export const SK_MSG_PROGRAM = {
  object: "redirect",
  program: "mb_sk_msg",
  map: "sock_pair_map" satisfies MapName,
} as const;

/** Per-pod ingress programs (CNI mode). */
export const INGRESS_PROGRAMS = {
  object: "ingress",
  xdp: "mb_xdp_ingress",
  tcIngress: "mb_tc_ingress",
  tcEgress: "mb_tc_egress",
} as const;

/** The map iterator that reads the kernel's element counts (optional: Linux 6.6+). */
export const STATS_PROGRAM = { object: "stats", program: "mb_map_stats" } as const;

export const OBJECTS = ["connect", "origdst", "sockops", "redirect", "dns", "ingress"] as const;

/** Where the compiled objects are: next to the sources, or wherever MERBRIDGE_BPF_DIR says. */
export function objectsDir(): string {
  return Deno.env.get("MERBRIDGE_BPF_DIR") ?? new URL("../../bpf/build/", import.meta.url).pathname;
}
