// The public library surface: everything a program embedding the agent (or a test) may use.
// The executable's entry point is main.ts.
export { VERSION } from "./src/version.ts";

// BPF loading, links and maps (mesh-agnostic).
export * from "./src/bpf/mod.ts";

// The datapath: which programs go where, pinned under one directory.
export {
  Datapath,
  type DatapathOptions,
  PinnedDatapathMaps,
  pinnedLinks,
  uninstallDatapath,
} from "./src/datapath/datapath.ts";
export { CGROUP_PROGRAMS, INGRESS_PROGRAMS, SK_MSG_PROGRAM } from "./src/datapath/catalog.ts";

// Typed maps whose encoders mirror bpf/common.h.
export { DatapathMaps, MAP_NAMES, type MapName, type RawMap, type RawPerCpuMap } from "./src/maps/manager.ts";
export * from "./src/maps/layouts.ts";
export { decode, encode, layout, type StructDef } from "./src/maps/codec.ts";

// Mesh semantics: modes, annotations, membership, and the reference decision model.
export * from "./src/mesh/types.ts";
export { meshParams, parseMeshMode } from "./src/mesh/modes.ts";
export { defaultPolicy, podPolicy } from "./src/mesh/policy.ts";
export { isInMesh, podEntry } from "./src/mesh/membership.ts";
export {
  type CallerPod,
  type ConnectProbe,
  type ConnectVerdict,
  decideConnect,
  decideInbound,
  decideOutbound,
  explainConnect,
} from "./src/mesh/decide.ts";

// Per-pod pieces of CNI mode.
export { closeMarkListener, type MarkListener, openMarkListener } from "./src/netns/mark_listener.ts";
export { withNetns } from "./src/netns/netns.ts";
export { currentNetnsCookie } from "./src/netns/cookie.ts";
export { setTxChecksum, txChecksumEnabled } from "./src/netns/interface.ts";
export {
  attachIngress,
  detachIngress,
  type IngressHook,
  type IngressOptions,
  resolveXdpMode,
  type XdpModeOption,
} from "./src/xdp/attacher.ts";

// Pod sources and the daemon.
export type { Pod, PodSource, PodSourceStats } from "./src/pods/source.ts";
export { FilePodSource, parsePodsYaml } from "./src/pods/file_source.ts";
export { Daemon, type DaemonConfig } from "./src/daemon/daemon.ts";
export { uninstallNode } from "./src/daemon/uninstall.ts";

// The CNI plugin and installer.
export { runCniPlugin } from "./cni/plugin.ts";
export { installCni, uninstallCni, watchCniConfig } from "./src/installer/install.ts";

export { cgroup2Root } from "./src/cgroup/cgroup2.ts";
export { getLogger, setupLogging } from "./src/log/logger.ts";
