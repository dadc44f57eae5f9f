// Which program of which object goes where. The loader below stays generic; this table is the only
// place that knows the datapath's programs.
import type { MapName } from "../generated/bpf_types.ts";
import { AttachType } from "../bpf/types.ts";

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
  /**
   * The hook's enum bpf_attach_type. A program reopened from its pin cannot tell; a fresh load
   * checks it against the program's section, so the two never disagree.
   */
  attachType: number;
  /** Only attached when the daemon runs with this feature on. */
  feature?: "dns-capture";
}

export const CGROUP_PROGRAMS: readonly CgroupProgram[] = [
  {
    object: "connect",
    program: "mb_connect4",
    hook: "connect4",
    attachType: AttachType.CGROUP_INET4_CONNECT,
  },
  // AF_INET6 sockets reaching IPv4 peers as ::ffff:a.b.c.d (the JDK's default) are handled like AF_INET.
  {
    object: "connect",
    program: "mb_connect6",
    hook: "connect6",
    attachType: AttachType.CGROUP_INET6_CONNECT,
  },
  {
    object: "origdst",
    program: "mb_getsockopt",
    hook: "getsockopt",
    attachType: AttachType.CGROUP_GETSOCKOPT,
  },
  {
    object: "origdst",
    program: "mb_getpeername4",
    hook: "getpeername4",
    attachType: AttachType.CGROUP_INET4_GETPEERNAME,
  },
  {
    object: "origdst",
    program: "mb_getpeername6",
    hook: "getpeername6",
    attachType: AttachType.CGROUP_INET6_GETPEERNAME,
  },
  { object: "sockops", program: "mb_sockops", hook: "sockops", attachType: AttachType.CGROUP_SOCK_OPS },
  {
    object: "dns",
    program: "mb_sendmsg4",
    hook: "sendmsg4",
    attachType: AttachType.CGROUP_UDP4_SENDMSG,
    feature: "dns-capture",
  },
  {
    object: "dns",
    program: "mb_sendmsg6",
    hook: "sendmsg6",
    attachType: AttachType.CGROUP_UDP6_SENDMSG,
    feature: "dns-capture",
  },
  {
    object: "dns",
    program: "mb_recvmsg4",
    hook: "recvmsg4",
    attachType: AttachType.CGROUP_UDP4_RECVMSG,
    feature: "dns-capture",
  },
  {
    object: "dns",
    program: "mb_recvmsg6",
    hook: "recvmsg6",
    attachType: AttachType.CGROUP_UDP6_RECVMSG,
    feature: "dns-capture",
  },
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

/** Every program the datapath runs, with the attach type it is loaded for where it has a fixed one. */
export function catalogPrograms(): { object: string; program: string; attachType?: number }[] {
  return [
    ...CGROUP_PROGRAMS.map(({ object, program, attachType }) => ({ object, program, attachType })),
    { object: SK_MSG_PROGRAM.object, program: SK_MSG_PROGRAM.program, attachType: AttachType.SK_MSG_VERDICT },
    { object: INGRESS_PROGRAMS.object, program: INGRESS_PROGRAMS.xdp },
    { object: INGRESS_PROGRAMS.object, program: INGRESS_PROGRAMS.tcIngress },
    { object: INGRESS_PROGRAMS.object, program: INGRESS_PROGRAMS.tcEgress },
  ];
}

/** Where the compiled objects are: next to the sources, or wherever MERBRIDGE_BPF_DIR says. */
export function objectsDir(): string {
  return Deno.env.get("MERBRIDGE_BPF_DIR") ?? new URL("../../bpf/build/", import.meta.url).pathname;
}
