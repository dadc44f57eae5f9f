// Throwaway "nodes" and "pods" out of network namespaces, veths and child cgroups, every name carrying a
// per-run prefix. Nothing is attached to the root cgroup or the machine's own interfaces, and what a run
// that died left behind is swept before anything new is built.
import { cgroup2Root } from "../src/cgroup/cgroup2.ts";
import { withNetns } from "../src/netns/netns.ts";
import { run } from "./proc.ts";
import type { Scope } from "./scope.ts";

let seq = 0;
const PID36 = Deno.pid.toString(36).padStart(5, "0");
/**
 * A short unique prefix (interface names are limited to 15 bytes). It embeds our PID, so that
 * sweepStale() can tell the leftovers of a crashed run (PID gone) from resources of runs still going.
 */
export function uniq(): string {
  seq++;
  return `mb${PID36}${seq.toString(36)}`;
}

const STALE = /^mb([0-9a-z]{5})/;

function ownerAlive(name: string): boolean {
  const m = STALE.exec(name);
  if (!m) return true; // not ours: never touch
  const pid = parseInt(m[1]!, 36);
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes namespaces, pin directories and cgroups left by test runs that died before their cleanup
 * ran (an uncaught error ends the runner without unwinding). Only names with our prefix whose
 * creating process no longer exists are touched.
 */
export function sweepStale(): string[] {
  const removed: string[] = [];
  const netns = new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped", stderr: "null" })
    .outputSync();
  for (const line of new TextDecoder().decode(netns.stdout).split("\n")) {
    const name = line.split(" ")[0] ?? "";
    if (STALE.test(name) && !ownerAlive(name)) {
      // Processes still inside a dead run's namespace were started by that run.
      const pids = new Deno.Command("ip", { args: ["netns", "pids", name], stdout: "piped", stderr: "null" })
        .outputSync();
      for (const pid of new TextDecoder().decode(pids.stdout).split("\n").filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch { /* gone */ }
      }
      new Deno.Command("ip", { args: ["netns", "del", name], stderr: "null" }).outputSync();
      removed.push(`netns ${name}`);
    }
  }
  for (const e of Deno.readDirSync("/sys/fs/bpf")) {
    if (STALE.test(e.name) && !ownerAlive(e.name)) {
      new Deno.Command("rm", { args: ["-rf", `/sys/fs/bpf/${e.name}`] }).outputSync();
      removed.push(`pins ${e.name}`);
    }
  }
  for (const e of Deno.readDirSync("/tmp")) {
    const m = /^merbridge-nettool-(\d+)-/.exec(e.name);
    if (!m) continue;
    try {
      Deno.statSync(`/proc/${m[1]}`);
    } catch {
      Deno.removeSync(`/tmp/${e.name}`, { recursive: true });
      removed.push(`temp ${e.name}`);
    }
  }
  const cg = cgroup2Root();
  for (const e of Deno.readDirSync(cg)) {
    if (e.isDirectory && STALE.test(e.name) && !ownerAlive(e.name)) {
      try {
        // Only processes a dead test run started live in its cgroup: end them with it.
        Deno.writeTextFileSync(`${cg}/${e.name}/cgroup.kill`, "1");
        for (let i = 0; i < 50 && Deno.readTextFileSync(`${cg}/${e.name}/cgroup.procs`).trim(); i++) {
          new Deno.Command("sleep", { args: ["0.05"] }).outputSync();
        }
        Deno.removeSync(`${cg}/${e.name}`);
        removed.push(`cgroup ${e.name}`);
      } catch { /* still busy: next sweep */ }
    }
  }
  return removed;
}

/** Runs a command inside a named network namespace (nsenter keeps /sys and bpffs visible). */
export function inNs(ns: string, cmd: string, args: string[], opts: { allowFail?: boolean } = {}) {
  return run("nsenter", [`--net=/run/netns/${ns}`, "--", cmd, ...args], opts);
}

export async function createNetns(scope: Scope, name: string): Promise<string> {
  await run("ip", ["netns", "add", name]);
  scope.defer(() => run("ip", ["netns", "del", name], { allowFail: true }));
  await inNs(name, "ip", ["link", "set", "lo", "up"]);
  return name;
}

/** A child cgroup of the cgroup2 root, removed at the end (after its processes are gone). */
export async function createCgroup(scope: Scope, name: string): Promise<string> {
  const path = `${cgroup2Root()}/${name}`;
  await Deno.mkdir(path);
  scope.defer(async () => {
    for (let i = 0; i < 50; i++) {
      try {
        await Deno.remove(path);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await Deno.remove(path);
  });
  return path;
}

export interface TestNode {
  ns: string;
  /** First three octets of the pod subnet, e.g. "10.248.3". */
  subnet: string;
  prefix: string;
}

let subnetSeq = 0;

/** A "node": a namespace holding a bridge that pods attach to, with forwarding on. */
export async function createNode(scope: Scope, prefix = uniq()): Promise<TestNode> {
  const ns = await createNetns(scope, `${prefix}n`);
  subnetSeq++;
  const subnet = `10.248.${(Deno.pid + subnetSeq) % 250}`;
  await inNs(ns, "ip", ["link", "add", "br0", "type", "bridge"]);
  await inNs(ns, "ip", ["addr", "add", `${subnet}.1/24`, "dev", "br0"]);
  await inNs(ns, "ip", ["link", "set", "br0", "up"]);
  await inNs(ns, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
  return { ns, subnet, prefix };
}

export interface TestPod {
  name: string;
  ns: string;
  ip: string;
  /** The pod's IPv6 address, once addIpv6 gave it one. */
  ip6?: string;
  hostIf: string;
}

/**
 * Makes a pod dual-stack: fd00:<third octet of the node subnet>::<host octet>/64 on eth0, and ::6 on
 * lo, where istio-iptables puts it so that the proxy can bind it for its inbound passthrough.
 * Duplicate address detection is skipped so the address is usable at once.
 */
export async function addIpv6(pod: TestPod, node: TestNode): Promise<string> {
  const ip6 = `fd00:${node.subnet.split(".")[2]}::${pod.ip.split(".")[3]}`;
  await inNs(pod.ns, "ip", ["-6", "addr", "add", `${ip6}/64`, "dev", "eth0", "nodad"]);
  await inNs(pod.ns, "ip", ["-6", "addr", "add", "::6/128", "dev", "lo", "nodad"]);
  pod.ip6 = ip6;
  return ip6;
}

/** A "pod": a namespace with eth0 on the node's bridge. */
export async function createPod(
  scope: Scope,
  node: TestNode,
  name: string,
  hostOctet: number,
): Promise<TestPod> {
  const ns = await createNetns(scope, `${node.prefix}${name}`);
  const hostIf = `${node.prefix}${name}h`.slice(0, 15);
  const ip = `${node.subnet}.${hostOctet}`;
  await inNs(node.ns, "ip", ["link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
  await inNs(node.ns, "ip", ["link", "set", hostIf, "master", "br0", "up"]);
  await inNs(ns, "ip", ["addr", "add", `${ip}/24`, "dev", "eth0"]);
  await inNs(ns, "ip", ["link", "set", "eth0", "up"]);
  await inNs(ns, "ip", ["route", "add", "default", "via", `${node.subnet}.1`]);
  return { name, ns, ip, hostIf };
}

export interface UplinkOptions {
  /** First three octets of the link's /24: the node gets .1, the other side .2. */
  net: string;
  /** The pod network the other side reaches through the node, e.g. "10.250.3.0/24". */
  pods: string;
  nodeIf?: string;
  otherIf?: string;
  /**
   * Leave transmit checksum offload on. Off (the default), every hop computes checksums in software, so
   * a packet whose checksum a program got wrong is dropped after the forwarding hop instead of passing
   * as "partial".
   */
  offload?: boolean;
}

/**
 * Links a node namespace to another one ("another node", or a client one hop away) with a veth pair,
 * forwarding on in the node and a route to the pods through it.
 */
export async function uplink(node: string, other: string, o: UplinkOptions) {
  const nodeIf = o.nodeIf ?? "n0", otherIf = o.otherIf ?? "c0";
  const nodeIp = `${o.net}.1`, otherIp = `${o.net}.2`;
  await inNs(node, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
  await inNs(node, "ip", ["link", "add", nodeIf, "type", "veth", "peer", "name", otherIf, "netns", other]);
  await inNs(node, "ip", ["addr", "add", `${nodeIp}/24`, "dev", nodeIf]);
  await inNs(node, "ip", ["link", "set", nodeIf, "up"]);
  await inNs(other, "ip", ["addr", "add", `${otherIp}/24`, "dev", otherIf]);
  await inNs(other, "ip", ["link", "set", otherIf, "up"]);
  await inNs(other, "ip", ["route", "add", o.pods, "via", nodeIp]);
  if (!o.offload) {
    for (const [ns, dev] of [[node, nodeIf], [other, otherIf]] as const) {
      await inNs(ns, "ethtool", ["-K", dev, "tx", "off"]);
    }
  }
  return { nodeIp, otherIp, nodeIf, otherIf };
}

// A run that died earlier (SIGKILL, OOM, a runner abort) could not clean up: do it before building more.
if (Deno.uid() === 0) sweepStale();

/** The most receive-queue memory the pod's TCP sockets held at once during a run (ss -tm "r"). */
export interface QueuePeak {
  totalBytes: number;
  socketBytes: number;
  samples: number;
}

/**
 * Samples the receive memory of every TCP socket in a namespace until stopped. The sockmap fast path
 * delivers into the peer's queue without the receive-window backpressure of TCP, so this is where an
 * app that writes faster than its proxy reads shows up.
 */
export function sampleQueues(ns: string, everyMs: number): { stop: () => Promise<QueuePeak> } {
  const peak: QueuePeak = { totalBytes: 0, socketBytes: 0, samples: 0 };
  let running = true;
  const loop = (async () => {
    while (running) {
      const out = await new Deno.Command("nsenter", {
        args: [`--net=/run/netns/${ns}`, "--", "ss", "-tmnH"],
        stdout: "piped",
        stderr: "null",
      }).output();
      const rs = [...new TextDecoder().decode(out.stdout).matchAll(/skmem:\(r(\d+),/g)].map((m) =>
        Number(m[1])
      );
      peak.samples++;
      peak.totalBytes = Math.max(peak.totalBytes, rs.reduce((a, b) => a + b, 0));
      peak.socketBytes = Math.max(peak.socketBytes, ...rs, 0);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return peak;
    },
  };
}

/**
 * Makes a loopback service of ours (a TCP port on 127.0.0.1 here) reachable on the same port of
 * 127.0.0.1 inside namespace `ns`: for a program the tests run in a node's namespace that, on a
 * real node, shares the host's network with the daemon (the CNI plugin reading the API server).
 * Each connection is copied both ways by this process; nothing leaves loopback.
 */
export function loopbackRelay(scope: Scope, ns: string, port: number): void {
  // The listening socket is made while this thread is in the namespace, and stays there.
  const listener = withNetns(`/run/netns/${ns}`, () => Deno.listen({ hostname: "127.0.0.1", port }));
  const open = new Set<Deno.Conn>();
  const close = (c: Deno.Conn) => {
    if (!open.delete(c)) return;
    try {
      c.close();
    } catch {
      // Already closed by the other direction's pipe.
    }
  };
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    await from.readable.pipeTo(to.writable, { preventClose: true }).catch(() => {});
    close(from);
    close(to);
  };
  const served = (async () => {
    for await (const inside of listener) {
      open.add(inside);
      Deno.connect({ hostname: "127.0.0.1", port }).then((outside) => {
        open.add(outside);
        pipe(inside, outside);
        pipe(outside, inside);
      }, () => close(inside));
    }
  })().catch(() => {});
  scope.defer(async () => {
    listener.close();
    for (const c of [...open]) close(c);
    await served;
  });
}
