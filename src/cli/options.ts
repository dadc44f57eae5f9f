// Every flag of every subcommand, with its default, in one place: deploy/all-in-one.yaml and the
// manifest test read the defaults from here.
import type { FlagSpecs } from "./args.ts";
import { LOG_LEVELS } from "../log/logger.ts";
import { MESH_MODES } from "../mesh/types.ts";
import { SERVICE_ACCOUNT_DIR } from "../kube/config.ts";

export const DEFAULTS = {
  pinPath: "/sys/fs/bpf/merbridge",
  runDir: "/var/run/merbridge",
  stateDir: "/var/lib/merbridge",
  cniBinDir: "/opt/cni/bin",
  cniConfigDir: "/etc/cni/net.d",
  metricsAddr: "0.0.0.0:39808",
  netnsDirs: "/var/run/netns,/run/netns",
} as const;

export const LOG_FLAGS = {
  "log-level": { type: "string", default: "info", choices: LOG_LEVELS, description: "lowest level logged" },
  debug: { type: "boolean", default: false, description: "shorthand for --log-level=debug" },
  "log-format": {
    type: "string",
    default: "auto",
    choices: ["auto", "json", "text"],
    description: "auto is JSON lines unless stderr is a terminal",
  },
} as const satisfies FlagSpecs;

export const PIN_FLAGS = {
  "bpf-pin-path": {
    type: "string",
    default: DEFAULTS.pinPath,
    placeholder: "DIR",
    description: "bpffs directory holding our pinned maps and links",
  },
} as const satisfies FlagSpecs;

export const OUTPUT_FLAGS = {
  output: { type: "string", default: "table", choices: ["table", "json"], description: "output format" },
} as const satisfies FlagSpecs;

export const CNI_INSTALL_FLAGS = {
  "cni-bin-dir": {
    type: "string",
    default: DEFAULTS.cniBinDir,
    placeholder: "DIR",
    description: "where CNI plugins live",
  },
  "cni-config-dir": {
    type: "string",
    default: DEFAULTS.cniConfigDir,
    placeholder: "DIR",
    description: "where the runtime reads CNI network configs",
  },
  "run-dir": {
    type: "string",
    default: DEFAULTS.runDir,
    placeholder: "DIR",
    description: "runtime directory (the CNI plugin's unix socket lives here)",
  },
  "state-dir": {
    type: "string",
    default: DEFAULTS.stateDir,
    placeholder: "DIR",
    description: "persistent state (what the installer changed, so uninstall can undo it)",
  },
} as const satisfies FlagSpecs;

export const DAEMON_FLAGS = {
  mode: {
    type: "string",
    default: "istio",
    choices: MESH_MODES,
    description: "which mesh's ports, uid and annotations",
  },
  "cni-mode": {
    type: "boolean",
    default: false,
    description: "chain the CNI plugin: per-pod identity, per-pod annotations, XDP/TC inbound interception",
  },
  "hardware-checksum": {
    type: "boolean",
    default: false,
    description: "keep tx checksum offload on pod interfaces (off by default, see README)",
  },
  "ingress-hook": {
    type: "string",
    default: "xdp",
    choices: ["xdp", "tc"],
    description: "inbound rewrite hook in CNI mode",
  },
  "xdp-mode": {
    type: "string",
    default: "auto",
    choices: ["auto", "native", "generic"],
    description: "how the XDP hook runs; auto: generic on veth (keeps GSO), native elsewhere",
  },
  "dns-capture": { type: "boolean", default: false, description: "send UDP port 53 to the proxy's DNS port" },
  sockmap: {
    type: "boolean",
    default: false,
    description:
      "sockmap fast path between an app and its proxy: lower latency; blocking readers may see EAGAIN (README)",
  },
  "cgroup-path": {
    type: "string",
    placeholder: "DIR",
    description: "cgroup v2 directory whose processes are intercepted (default: the cgroup2 mount root)",
  },
  ...PIN_FLAGS,
  "pods-file": {
    type: "string",
    placeholder: "FILE",
    description: "Pod/PodList YAML to read pods from instead of the Kubernetes API (re-read on change)",
  },
  kubeconfig: {
    type: "string",
    placeholder: "FILE",
    env: "KUBECONFIG",
    description: "kubeconfig for the API server (default: in-cluster service account)",
  },
  "service-account-dir": {
    type: "string",
    default: SERVICE_ACCOUNT_DIR,
    placeholder: "DIR",
    description: "where the in-cluster service account's token and ca.crt are (without --kubeconfig)",
  },
  "node-name": {
    type: "string",
    env: "NODE_NAME",
    placeholder: "NAME",
    description: "this node's name (default: the host name)",
  },
  "metrics-addr": {
    type: "string",
    default: DEFAULTS.metricsAddr,
    placeholder: "HOST:PORT",
    description: "HTTP address for /healthz, /readyz and /metrics (empty to disable)",
  },
  "netns-dirs": {
    type: "string",
    default: DEFAULTS.netnsDirs,
    placeholder: "DIRS",
    description: "comma-separated directories where runtimes keep pod network namespaces",
  },
  "conn-table-size": {
    type: "int",
    default: 0,
    min: 0,
    max: 1 << 24,
    description:
      "capacity of the connection tables; 0: one slot per 32 KiB of node memory, 64Ki..1Mi (README)",
  },
  "syn-table-size": {
    type: "int",
    default: 65536,
    min: 1024,
    max: 1 << 22,
    description:
      "capacity of the inbound handshake table (CNI mode; oldest handshakes give way under a SYN flood)",
  },
  "uninstall-on-exit": {
    type: "boolean",
    default: false,
    description: "remove the datapath on SIGTERM (default: leave it running for the next daemon)",
  },
  ...CNI_INSTALL_FLAGS,
  ...LOG_FLAGS,
} as const satisfies FlagSpecs;
