// The pod-keyed maps in memory, recording every write, for the node-state writer's tests.
import type { PodIpPair, PodKeyedMaps } from "../../src/daemon/node_state.ts";

export class FakePodMaps implements PodKeyedMaps {
  pods = new Map<string, Uint8Array>();
  counters = new Set<string>();
  marks = new Map<number, PodIpPair>();
  netns = new Map<bigint, PodIpPair>();
  writes: string[] = [];
  /** Reads of a whole map (keys walked). */
  walks = 0;

  podIps() {
    this.walks++;
    return [...this.pods.keys()];
  }
  podBytes(ip: string) {
    return this.pods.get(ip);
  }
  putPodBytes(ip: string, bytes: Uint8Array) {
    this.writes.push(`pod ${ip}`);
    this.pods.set(ip, bytes);
  }
  deletePod(ip: string) {
    this.writes.push(`del pod ${ip}`);
    return this.pods.delete(ip);
  }
  podCounterIps() {
    this.walks++;
    return [...this.counters];
  }
  addPodCounters(ip: string) {
    this.writes.push(`counters ${ip}`);
    this.counters.add(ip);
  }
  deletePodCounters(ip: string) {
    this.writes.push(`del counters ${ip}`);
    return this.counters.delete(ip);
  }
  markIps() {
    this.walks++;
    return new Map(this.marks);
  }
  putMark(mark: number, ip4: string, ip6 = "") {
    this.writes.push(`mark ${mark} ${ip4}${ip6 ? ` ${ip6}` : ""}`);
    this.marks.set(mark, { ip4, ip6 });
  }
  deleteMark(mark: number) {
    this.writes.push(`del mark ${mark}`);
    return this.marks.delete(mark);
  }
  netnsPodIps() {
    this.walks++;
    return new Map(this.netns);
  }
  putNetnsPod(cookie: bigint, ip4: string, ip6 = "") {
    this.writes.push(`netns ${cookie} ${ip4}${ip6 ? ` ${ip6}` : ""}`);
    this.netns.set(cookie, { ip4, ip6 });
  }
  deleteNetnsPod(cookie: bigint) {
    this.writes.push(`del netns ${cookie}`);
    return this.netns.delete(cookie);
  }
  /** Only the writes to one map kind ("netns", "mark", "pod", "counters"). */
  writesTo(kind: string): string[] {
    return this.writes.filter((w) => w.startsWith(`${kind} `) || w.startsWith(`del ${kind} `));
  }
}
