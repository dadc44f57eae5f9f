// The benchmark's IPv6 paths, added to the data-plane world (topology.ts) after it is built: dual-stack
// pods on the same node bridge, measured over native IPv6 against Istio's dual-stack rule set (its
// iptables rules and their ip6tables twin, ::1 and ::6 for 127.0.0.1 and 127.0.0.6).
//
//   s6   server pod, outside the mesh, dual-stack server                outbound target
//   o6i  client pod, Istio's iptables + ip6tables rules, proxy on [::]  outbound: REDIRECT
//   o6e  client pod, proxy on [::], eBPF without the fast path          outbound: connect6 redirect
//   i6i  server pod, Istio's iptables + ip6tables rules, proxy on [::]  inbound: ISTIO_INBOUND REDIRECT
//   i6x  server pod, proxy on [::], XDP ingress (generic, offload off)  inbound: XDP
//
// The same datapaths, cgroups, proxy, load generator and CPU pinning as the IPv4 rows; the proxies and
// servers of these pods listen on [::] with IPV6_V6ONLY off, as Istio's dual-stack Envoy does (the
// datapath redirects IPv6 only to a proxy that listens on IPv6). Latency and connection rate only, and
// no direct floor: the bulk rows and the floor stay IPv4 to keep the run short.
import { defaultPolicy } from "../src/mesh/policy.ts";
import { attachIngress, detachIngress } from "../src/xdp/attacher.ts";
import {
  addIpv6,
  createPod,
  inNs,
  installIstioIptables,
  markPod,
  type Scope,
  type TestPod,
} from "../testbed/mod.ts";
import type { NativeTools } from "./native.ts";
import type { Pinning } from "./procs.ts";
import { APP_UID, BULK_PORT, type Dataplane, type PathEnd, startPeers, tuneNetns } from "./topology.ts";

export const OUT6_PATHS = ["iptables", "ebpf"] as const;
export const IN6_PATHS = ["iptables", "xdp"] as const;

export interface Ipv6Paths {
  outbound: Record<typeof OUT6_PATHS[number], PathEnd>;
  inbound: Record<typeof IN6_PATHS[number], PathEnd>;
}

export async function buildIpv6Paths(
  scope: Scope,
  tools: NativeTools,
  pin: Pinning,
  w: Dataplane,
): Promise<Ipv6Paths> {
  const { node, mesh, fast, nofast } = w;
  const k = node.subnet.split(".")[2]!;
  // The node routes IPv6 between its bridge and the remote client's link, as it does IPv4.
  await inNs(node.ns, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
  await inNs(node.ns, "ip", ["-6", "addr", "add", `fd00:${k}::1/64`, "dev", "br0", "nodad"]);
  await inNs(node.ns, "ip", ["-6", "addr", "add", `fd01:${k}::1/64`, "dev", "n0", "nodad"]);
  await inNs(w.remote, "ip", ["-6", "addr", "add", `fd01:${k}::2/64`, "dev", "c0", "nodad"]);
  await inNs(w.remote, "ip", ["-6", "route", "add", `fd00:${k}::/64`, "via", `fd01:${k}::1`]);

  const pods: Record<string, TestPod> = {};
  for (
    const [name, octet] of [["s6", 110], ["o6i", 112], ["o6e", 113], ["i6i", 114], ["i6x", 115]]
  ) {
    const p = await createPod(scope, node, name as string, octet as number);
    await addIpv6(p, node);
    await inNs(p.ns, "ip", ["-6", "route", "add", "default", "via", `fd00:${k}::1`]);
    await tuneNetns(p.ns);
    pods[name as string] = p;
  }
  const pod = (n: string) => pods[n]!;
  for (const n of ["o6i", "i6i"]) {
    await installIstioIptables(pod(n).ns);
    await installIstioIptables(pod(n).ns, {}, {}, 6);
  }

  // Identified by both IPs, as the CNI plugin and the daemon do for a dual-stack pod.
  for (const [n, dp] of [["o6e", nofast], ["i6x", fast]] as const) {
    const p = pod(n);
    const { mark, cookie } = markPod(scope, p, w.marks);
    dp.maps.putMark(mark, p.ip, p.ip6);
    dp.maps.putNetnsPod(cookie, p.ip, p.ip6);
    dp.maps.putPod(p.ip, defaultPolicy("istio"));
    dp.maps.putPod(p.ip6!, defaultPolicy("istio"));
  }
  const target = {
    netnsPath: `/run/netns/${pod("i6x").ns}`,
    ifName: "eth0",
    pinDir: `${fast.opts.pinPath}/pods/i6x`,
  };
  const r = attachIngress(target, fast.ingressPrograms(), {
    hook: "xdp",
    hardwareChecksum: false,
    xdpMode: "auto",
  });
  scope.defer(() => detachIngress(target, r.txChanged));

  const cgNone = w.cgroups.none;
  const cgOf = (dp: typeof fast) => dp.opts.cgroupPath;
  const proxies = await startPeers(scope, pin, tools, mesh, {
    pod,
    servers: [["s6", cgNone], ["i6i", cgNone], ["i6x", cgOf(fast)]],
    proxies: [["o6i", cgNone], ["o6e", cgOf(nofast)], ["i6i", cgNone], ["i6x", cgOf(fast)]],
    bulkPort: BULK_PORT,
    extraArgs: ["--dual-stack"],
  });

  const app = (n: string, cgroup: string) => ({ netns: pod(n).ns, cgroup, uid: APP_UID });
  const fromRemote = { netns: w.remote, cgroup: cgNone, uid: APP_UID };
  const at = (n: string) => `[${pod(n).ip6}]`;
  return {
    outbound: {
      iptables: {
        id: "iptables",
        client: app("o6i", cgNone),
        serverIp: at("s6"),
        proxy: proxies.o6i,
        expect: "iptables",
      },
      ebpf: {
        id: "ebpf",
        client: app("o6e", cgOf(nofast)),
        serverIp: at("s6"),
        proxy: proxies.o6e,
        dp: nofast,
        expect: "connect",
      },
    },
    inbound: {
      iptables: {
        id: "iptables",
        client: fromRemote,
        serverIp: at("i6i"),
        proxy: proxies.i6i,
        expect: "iptables",
      },
      xdp: {
        id: "xdp",
        client: fromRemote,
        serverIp: at("i6x"),
        proxy: proxies.i6x,
        dp: fast,
        expect: "ingress",
      },
    },
  };
}
