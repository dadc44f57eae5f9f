// The data-plane benchmark's world, built once and measured path after path:
//
//   node namespace: bridge br0 (pods) + veth n0 to a second "node" holding the remote client
//   s   server pod, outside the mesh (echo + bulk)               outbound target
//   od  client pod, nothing installed                            outbound: direct (floor)
//   oi  client pod, istio-iptables rules + proxy                 outbound: iptables REDIRECT
//   on  client pod, proxy, eBPF without the sockmap fast path   outbound: connect4 redirect
//   of  client pod, proxy, full eBPF datapath                    outbound: connect4 + sk_msg
//   id  server pod, nothing installed                            inbound: direct (floor)
//   ii  server pod, istio-iptables rules + proxy                 inbound: ISTIO_INBOUND REDIRECT
//   ix  server pod, proxy, XDP ingress (offload off: default)    inbound: XDP
//   ih  server pod, proxy, XDP ingress, --hardware-checksum      inbound: XDP, offload kept on
//   it  server pod, proxy, TC ingress                            inbound: TC
//
// Two datapaths, each with its own pins and cgroup, both attached by the product's own attach():
// "fast" with the default mesh config, "nofast" with the sockmap switch off (what `--sockmap=false`
// writes), so connect4, sockops and getsockopt run exactly as in production and only the shortcut
// between the app and its proxy is missing (sockets never enter the sockhash).
import type { Datapath } from "../src/datapath/datapath.ts";
import { meshParams } from "../src/mesh/modes.ts";
import { defaultPolicy } from "../src/mesh/policy.ts";
import type { MeshParams } from "../src/mesh/types.ts";
import { attachIngress, detachIngress, type IngressHook, type XdpModeOption } from "../src/xdp/attacher.ts";
import {
  createCgroup,
  createNetns,
  createNode,
  createPod,
  identifyAsCni,
  inNs,
  installIstioIptables,
  listening,
  loadDatapath,
  type Proc,
  type Scope,
  sidecarReady,
  type SpawnOptions,
  startMonitor,
  type TestNode,
  type TestPod,
  uniq,
  uplink,
} from "../testbed/mod.ts";
import type { NativeTools } from "./native.ts";
import { assertPinned, type Pinning, startPinned } from "./procs.ts";

export const APP_UID = 1000;
export const SERVER_UID = 2000;
export const ECHO_PORT = 8080;
export const BULK_PORT = 8081;

export const OUT_PATHS = ["direct", "iptables", "ebpf", "ebpf_monitor", "ebpf_fast"] as const;
export type OutPath = typeof OUT_PATHS[number];
export const IN_PATHS = ["direct", "iptables", "xdp", "xdp_native", "xdp_hwcsum", "tc", "tc_hwcsum"] as const;
export type InPath = typeof IN_PATHS[number];

export const PATH_LABELS: Record<OutPath | InPath, string> = {
  direct: "direct (no mesh)",
  iptables: "iptables REDIRECT + proxy",
  ebpf: "eBPF connect4 + proxy, no sockmap",
  ebpf_monitor: "eBPF connect4 + proxy, no sockmap, with merbridge monitor attached",
  ebpf_fast: "eBPF connect4 + proxy + sockmap",
  xdp: "eBPF XDP ingress + proxy (generic on veth, the default)",
  xdp_native: "eBPF XDP ingress + proxy, native mode",
  xdp_hwcsum: "eBPF XDP ingress + proxy, hw checksum",
  tc: "eBPF TC ingress + proxy",
  tc_hwcsum: "eBPF TC ingress + proxy, hw checksum",
};

/** Which datapath's counters prove a path was taken, and what they must show. */
export type Expect = "none" | "iptables" | "connect" | "connect_fast" | "ingress";

export interface PathEnd {
  id: string;
  /** Where the client runs. */
  client: SpawnOptions;
  /** The address the client dials (the server's, never the proxy's). */
  serverIp: string;
  proxy?: Proc;
  dp?: Datapath;
  expect: Expect;
  /** Runs around each measurement of the path (e.g. a monitor attached for its duration). */
  during?: { start(): Promise<void>; stop(): Promise<void> };
}

/**
 * `merbridge monitor` on a datapath for the length of a measurement: it runs where this orchestrator
 * runs (off the measured CPU), as an operator's would, and is ready once it holds the lease.
 */
function attachedMonitor(scope: Scope, pinPath: string, dp: Datapath): NonNullable<PathEnd["during"]> {
  let p: Proc | undefined;
  const leased = () => dp.maps.monitorLeased();
  return {
    async start() {
      p = await startMonitor(scope, { pinPath, timeoutMs: 6000 });
    },
    async stop() {
      p?.kill("SIGTERM");
      await p?.done;
      // Its lines are not kept: a long connection-rate run would fill memory with them.
      p?.lines.splice(0);
      if (leased()) throw new Error("the monitor did not give its lease back");
    },
  };
}

export interface Dataplane {
  mesh: MeshParams;
  node: TestNode;
  outbound: Record<OutPath, PathEnd>;
  inbound: Record<InPath, PathEnd>;
  /** Pod namespaces whose conntrack table size is worth reporting, by path. */
  conntrackProbes: Record<string, string>;
  fast: Datapath;
  nofast: Datapath;
  /** What paths added later (ipv6.ts) build on: the remote client's namespace, cgroups, marks in use. */
  remote: string;
  cgroups: { none: string; nofast: string; fast: string };
  marks: Set<number>;
}

/** Per-namespace settings for connection-rate runs: ours only, the host's are never touched. */
export async function tuneNetns(ns: string) {
  // Thousands of short connections to one server per second: reuse TIME_WAIT ports (timestamps keep
  // it safe) and widen the ephemeral range, as load generators do; the same for every path.
  await inNs(ns, "sysctl", ["-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=10000 65000"]);
}

function loadBenchDatapath(
  scope: Scope,
  pinPath: string,
  cgroup: string,
  mesh: MeshParams,
  sockmap: boolean,
) {
  return loadDatapath(scope, { pinPath, cgroup, mesh, cniMode: true, sockmap });
}

export async function buildDataplane(
  scope: Scope,
  tools: NativeTools,
  pin: Pinning,
): Promise<Dataplane> {
  const mesh = meshParams("istio");
  const prefix = uniq();
  const node = await createNode(scope, prefix);
  const cg = {
    none: await createCgroup(scope, `${prefix}-none`),
    nofast: await createCgroup(scope, `${prefix}-nofast`),
    fast: await createCgroup(scope, `${prefix}-fast`),
  };
  const fast = loadBenchDatapath(scope, `/sys/fs/bpf/${prefix}-fast`, cg.fast, mesh, true);
  const nofast = loadBenchDatapath(scope, `/sys/fs/bpf/${prefix}-nofast`, cg.nofast, mesh, false);

  const pods: Record<string, TestPod> = {};
  const layout: [string, number][] = [
    ["s", 100],
    ["od", 10],
    ["oi", 11],
    ["on", 12],
    ["of", 13],
    ["id", 20],
    ["ii", 21],
    ["ix", 22],
    ["ih", 23],
    ["it", 24],
    ["iu", 25],
    ["in", 26],
  ];
  for (const [name, octet] of layout) {
    const pod = await createPod(scope, node, name, octet);
    await tuneNetns(pod.ns);
    pods[name] = pod;
  }
  const pod = (n: string) => pods[n]!;

  // The remote client: its own namespace, routed to the pods through the node.
  const remote = await createNetns(scope, `${prefix}c`);
  const k = node.subnet.split(".")[2]!;
  // Offload stays on, as on a real node's links.
  await uplink(node.ns, remote, { net: `10.251.${k}`, pods: `${node.subnet}.0/24`, offload: true });
  await tuneNetns(remote);

  // Istio's rules for the default injection (no annotations), the pods' own namespaces only.
  for (const n of ["oi", "ii"]) await installIstioIptables(pod(n).ns);

  const marks = new Set<number>();
  const policy = defaultPolicy("istio");
  for (const n of ["of", "ix", "in", "ih", "it", "iu"]) identifyAsCni(scope, fast, pod(n), marks, policy);
  identifyAsCni(scope, nofast, pod("on"), marks, policy);

  const hooks: [string, IngressHook, boolean, XdpModeOption][] = [
    ["ix", "xdp", false, "auto"],
    ["in", "xdp", false, "native"],
    ["ih", "xdp", true, "auto"],
    ["it", "tc", false, "auto"],
    ["iu", "tc", true, "auto"],
  ];
  for (const [n, hook, hardwareChecksum, xdpMode] of hooks) {
    const target = {
      netnsPath: `/run/netns/${pod(n).ns}`,
      ifName: "eth0",
      pinDir: `${fast.opts.pinPath}/pods/${n}`,
    };
    const r = attachIngress(target, fast.ingressPrograms(), { hook, hardwareChecksum, xdpMode });
    scope.defer(() => detachIngress(target, r.txChanged));
  }

  const servers: [string, string][] = [
    ["s", cg.none],
    ["id", cg.none],
    ["ii", cg.none],
    ["ix", cg.fast],
    ["in", cg.fast],
    ["ih", cg.fast],
    ["it", cg.fast],
    ["iu", cg.fast],
  ];
  const proxyCgroup: Record<string, string> = {
    oi: cg.none,
    on: cg.nofast,
    of: cg.fast,
    ii: cg.none,
    ix: cg.fast,
    ih: cg.fast,
    it: cg.fast,
    iu: cg.fast,
    in: cg.fast,
  };
  const proxies = await startPeers(scope, pin, tools, mesh, {
    pod,
    servers,
    proxies: Object.entries(proxyCgroup),
    bulkPort: BULK_PORT,
  });

  const app = (n: string, cgroup: string): SpawnOptions => ({ netns: pod(n).ns, cgroup, uid: APP_UID });
  const fromRemote: SpawnOptions = { netns: remote, cgroup: cg.none, uid: APP_UID };
  const sIp = pod("s").ip;
  return {
    mesh,
    node,
    fast,
    nofast,
    remote,
    cgroups: cg,
    marks,
    conntrackProbes: {
      "outbound iptables pod": pod("oi").ns,
      "outbound eBPF pod": pod("of").ns,
      "inbound iptables pod": pod("ii").ns,
      "inbound XDP pod": pod("ix").ns,
    },
    outbound: {
      direct: { id: "direct", client: app("od", cg.none), serverIp: sIp, expect: "none" },
      iptables: {
        id: "iptables",
        client: app("oi", cg.none),
        serverIp: sIp,
        proxy: proxies.oi,
        expect: "iptables",
      },
      ebpf: {
        id: "ebpf",
        client: app("on", cg.nofast),
        serverIp: sIp,
        proxy: proxies.on,
        dp: nofast,
        expect: "connect",
      },
      ebpf_monitor: {
        id: "ebpf_monitor",
        client: app("on", cg.nofast),
        serverIp: sIp,
        proxy: proxies.on,
        dp: nofast,
        expect: "connect",
        during: attachedMonitor(scope, `/sys/fs/bpf/${prefix}-nofast`, nofast),
      },
      ebpf_fast: {
        id: "ebpf_fast",
        client: app("of", cg.fast),
        serverIp: sIp,
        proxy: proxies.of,
        dp: fast,
        expect: "connect_fast",
      },
    },
    inbound: {
      direct: { id: "direct", client: fromRemote, serverIp: pod("id").ip, expect: "none" },
      iptables: {
        id: "iptables",
        client: fromRemote,
        serverIp: pod("ii").ip,
        proxy: proxies.ii,
        expect: "iptables",
      },
      xdp: {
        id: "xdp",
        client: fromRemote,
        serverIp: pod("ix").ip,
        proxy: proxies.ix,
        dp: fast,
        expect: "ingress",
      },
      xdp_native: {
        id: "xdp_native",
        client: fromRemote,
        serverIp: pod("in").ip,
        proxy: proxies.in,
        dp: fast,
        expect: "ingress",
      },
      xdp_hwcsum: {
        id: "xdp_hwcsum",
        client: fromRemote,
        serverIp: pod("ih").ip,
        proxy: proxies.ih,
        dp: fast,
        expect: "ingress",
      },
      tc: {
        id: "tc",
        client: fromRemote,
        serverIp: pod("it").ip,
        proxy: proxies.it,
        dp: fast,
        expect: "ingress",
      },
      tc_hwcsum: {
        id: "tc_hwcsum",
        client: fromRemote,
        serverIp: pod("iu").ip,
        proxy: proxies.iu,
        dp: fast,
        expect: "ingress",
      },
    },
  };
}

export interface PeerSet {
  pod(name: string): TestPod;
  /** The echo/bulk servers: pod name and cgroup ("s" and "s6" run as root, the others as SERVER_UID). */
  servers: readonly (readonly [string, string])[];
  /** The sidecar proxies: pod name and cgroup. */
  proxies: readonly (readonly [string, string])[];
  bulkPort: number;
  /** Arguments both peers get (the IPv6 run's --dual-stack). */
  extraArgs?: string[];
}

/**
 * Starts the C servers and proxies of a topology, each pinned to the measured CPU, and returns the
 * proxies by pod once every one of them listens.
 */
export async function startPeers(
  scope: Scope,
  pin: Pinning,
  tools: NativeTools,
  mesh: MeshParams,
  o: PeerSet,
): Promise<Record<string, Proc>> {
  const extra = o.extraArgs ?? [];
  const waits: Promise<unknown>[] = [];
  const started: Proc[] = [];
  for (const [n, cgroup] of o.servers) {
    const p = startPinned(scope, pin, tools.loadgen, [
      "server",
      "--echo",
      String(ECHO_PORT),
      "--bulk",
      String(o.bulkPort),
      ...extra,
    ], { netns: o.pod(n).ns, cgroup, uid: n === "s" || n === "s6" ? undefined : SERVER_UID });
    waits.push(listening(p));
    started.push(p);
  }
  const proxies: Record<string, Proc> = {};
  for (const [n, cgroup] of o.proxies) {
    const p = startPinned(scope, pin, tools.fastproxy, [
      "--outbound",
      String(mesh.outboundPort),
      "--inbound",
      String(mesh.inboundPort),
      ...extra,
    ], { netns: o.pod(n).ns, cgroup, uid: mesh.proxyUid, gid: mesh.proxyGid });
    proxies[n] = p;
    started.push(p);
    waits.push(sidecarReady(p, ["inbound"], 5000));
  }
  await Promise.all(waits);
  for (const p of started) assertPinned(p.pid, pin);
  return proxies;
}
