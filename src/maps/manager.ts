// Typed access to the datapath's maps. Works on any RawMap (a loaded object's map or a pinned map
// opened by `merbridge status`), so the CLI can read and the daemon can write the same way.
import type { MeshParams, PodPolicy } from "../mesh/types.ts";
import { ip16Key, layout, u32Key, u64Key } from "./codec.ts";
import { formatIp16 } from "../mesh/ipv6.ts";
import { numPossibleCpus } from "../bpf/map_fd.ts";

import {
  COUNTER_NAMES,
  type CounterName,
  type DecodedMeshConfig,
  decodeMeshConfig,
  decodeOrigDst,
  decodePairKey,
  decodePodConfig,
  decodePodIps,
  encodeMeshConfig,
  encodePodConfig,
  encodePodIps,
  type MeshConfigOptions,
  type OrigDst,
  type PairKey,
  type PodIps,
  TABLE_NAMES,
  type TableName,
} from "./layouts.ts";
import { MAPS, MESH_CONFIG, POD_STATS } from "../generated/bpf_types.ts";

/** struct pod_stats (bpf/maps.h), in field order: every field is a __u64 count. */
export const POD_STAT_NAMES = POD_STATS.fields.map(([name]) => name);
export type PodStatName = typeof POD_STATS.fields[number][0];

/** The byte-level operations the manager needs from a map handle. */
export interface RawMap {
  readonly name: string;
  lookup(key: Uint8Array): Uint8Array | undefined;
  update(key: Uint8Array, value: Uint8Array): void;
  delete(key: Uint8Array): boolean;
  keys(): Iterable<Uint8Array>;
}

/** A per-CPU map: one value buffer per possible CPU. */
export interface RawPerCpuMap {
  readonly name: string;
  lookupPerCpu(key: Uint8Array): Uint8Array[] | undefined;
}

/** A per-CPU hash map the agent also creates and deletes entries in. */
export interface RawPerCpuHash extends RawPerCpuMap {
  readonly valueSize: number;
  updatePerCpu(key: Uint8Array, values: Uint8Array[]): void;
  delete(key: Uint8Array): boolean;
  keys(): Iterable<Uint8Array>;
}

type MapSpecs = typeof MAPS;
/** Maps whose entries can be listed: all but the per-socket storage, which has no keys to walk. */
export type MapName = {
  [K in keyof MapSpecs]: MapSpecs[K]["type"] extends "sk_storage" ? never : K;
}[keyof MapSpecs];
export const MAP_NAMES = (Object.keys(MAPS) as (keyof MapSpecs)[]).filter((n): n is MapName =>
  MAPS[n].type !== "sk_storage"
);

/** The handle each map is used through: per-CPU maps read one value per CPU. */
type MapHandle<K extends MapName> = MapSpecs[K]["type"] extends "percpu_hash" ? RawPerCpuHash
  : MapSpecs[K]["type"] extends "percpu_array" ? RawPerCpuMap
  : RawMap;

/**
 * The maps DatapathMaps works on. The optional ones may be missing from a datapath pinned by an older
 * agent: what needs them says so when it is called.
 */
export const DATAPATH_MAPS = [
  "mesh_config",
  "local_pods",
  "mark_pod_ips",
  "netns_pod_ips",
  "pair_orig_dst",
  "ingress_syn",
  "table_fill",
  "counters",
] as const satisfies readonly MapName[];
export const OPTIONAL_DATAPATH_MAPS = ["pod_counters", "monitor_lease"] as const satisfies readonly MapName[];
export type DatapathMapHandles =
  & { [K in typeof DATAPATH_MAPS[number]]: MapHandle<K> }
  & { [K in typeof OPTIONAL_DATAPATH_MAPS[number]]?: MapHandle<K> };

/** The text of a 16-byte address key (dotted for IPv4). */
function ipOf(b: Uint8Array): string {
  return formatIp16(b.subarray(0, 16));
}

/** A pod identity's primary address: its IPv4, else its IPv6. */
const primary = (ips: PodIps) => ips.ip4 || ips.ip6;

function podIps(ip4: string, ip6: string): PodIps {
  // The identity value holds one address per family: say which slot each goes in.
  if (ip4.includes(":")) throw new Error(`pod IPv4 ${JSON.stringify(ip4)} is not IPv4`);
  if (ip6 !== "" && !ip6.includes(":")) throw new Error(`pod IPv6 ${JSON.stringify(ip6)} is not IPv6`);
  return { ip4, ip6 };
}

function u32Of(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

export class DatapathMaps {
  constructor(readonly maps: DatapathMapHandles) {}

  setMeshConfig(m: MeshParams, opts: MeshConfigOptions): void {
    this.maps.mesh_config.update(u32Key(0), encodeMeshConfig(m, opts));
  }

  meshConfig(): DecodedMeshConfig | undefined {
    const v = this.maps.mesh_config.lookup(u32Key(0));
    const cfg = v ? decodeMeshConfig(v) : undefined;
    return cfg && cfg.outboundPort !== 0 ? cfg : undefined;
  }

  /** Writes the config as zero: the programs then leave every connection alone (see get_config). */
  clearMeshConfig(): void {
    this.maps.mesh_config.update(u32Key(0), new Uint8Array(layout(MESH_CONFIG).size));
  }

  /** Writes a pod's policy under one of its IPs (either family); a dual-stack pod is written under each. */
  putPod(ip: string, policy: PodPolicy): void {
    this.maps.local_pods.update(ip16Key(ip), encodePodConfig(policy));
  }

  /** The raw encoding currently stored for a pod, to skip writes that would change nothing. */
  podBytes(ip: string): Uint8Array | undefined {
    return this.maps.local_pods.lookup(ip16Key(ip));
  }

  deletePod(ip: string): boolean {
    return this.maps.local_pods.delete(ip16Key(ip));
  }

  pods(): Map<string, PodPolicy> {
    const out = new Map<string, PodPolicy>();
    for (const k of this.maps.local_pods.keys()) {
      const v = this.maps.local_pods.lookup(k);
      if (v) out.set(ipOf(k), decodePodConfig(v));
    }
    return out;
  }

  /** `podIp` is the pod's IPv4 ("" when it has none), `podIp6` its IPv6. */
  putMark(mark: number, podIp: string, podIp6 = ""): void {
    this.maps.mark_pod_ips.update(u32Key(mark), encodePodIps(podIps(podIp, podIp6)));
  }

  deleteMark(mark: number): boolean {
    return this.maps.mark_pod_ips.delete(u32Key(mark));
  }

  /** Mark -> the pod's primary IP (its IPv4, else its IPv6). */
  marks(): Map<number, string> {
    return new Map([...this.markIps()].map(([m, ips]) => [m, primary(ips)]));
  }

  /** Mark -> both of the pod's addresses. */
  markIps(): Map<number, PodIps> {
    const out = new Map<number, PodIps>();
    for (const k of this.maps.mark_pod_ips.keys()) {
      const v = this.maps.mark_pod_ips.lookup(k);
      if (v) out.set(u32Of(k), decodePodIps(v));
    }
    return out;
  }

  /** `podIp` is the pod's IPv4 ("" when it has none), `podIp6` its IPv6. */
  putNetnsPod(cookie: bigint, podIp: string, podIp6 = ""): void {
    this.maps.netns_pod_ips.update(u64Key(cookie), encodePodIps(podIps(podIp, podIp6)));
  }

  deleteNetnsPod(cookie: bigint): boolean {
    return this.maps.netns_pod_ips.delete(u64Key(cookie));
  }

  /** Namespace cookie -> the pod's primary IP (its IPv4, else its IPv6). */
  netnsPods(): Map<bigint, string> {
    return new Map([...this.netnsPodIps()].map(([c, ips]) => [c, primary(ips)]));
  }

  /** Namespace cookie -> both of the pod's addresses. */
  netnsPodIps(): Map<bigint, PodIps> {
    const out = new Map<bigint, PodIps>();
    for (const k of this.maps.netns_pod_ips.keys()) {
      const v = this.maps.netns_pod_ips.lookup(k);
      if (v) out.set(new DataView(k.buffer, k.byteOffset, 8).getBigUint64(0, true), decodePodIps(v));
    }
    return out;
  }

  pairs(): { key: PairKey; orig: OrigDst }[] {
    return this.#records(this.maps.pair_orig_dst);
  }

  /** Inbound handshakes in progress (the ingress program's SYN records). */
  handshakes(): { key: PairKey; orig: OrigDst }[] {
    return this.#records(this.maps.ingress_syn);
  }

  #records(m: RawMap): { key: PairKey; orig: OrigDst }[] {
    const out = [];
    for (const k of m.keys()) {
      const v = m.lookup(k);
      if (v) out.push({ key: decodePairKey(k), orig: decodeOrigDst(v) });
    }
    return out;
  }

  /** Entries the programs count in their connection tables (enum table in bpf/common.h). */
  tableFill(): Record<TableName, number> {
    const out = {} as Record<TableName, number>;
    TABLE_NAMES.forEach((name, i) => {
      const v = this.maps.table_fill.lookup(u32Key(i));
      out[name] = v ? Number(new DataView(v.buffer, v.byteOffset, 8).getBigInt64(0, true)) : 0;
    });
    return out;
  }

  /** Zeroes the fill counters (their table was replaced by an empty one). */
  resetTableFill(): void {
    TABLE_NAMES.forEach((_, i) => this.maps.table_fill.update(u32Key(i), new Uint8Array(8)));
  }

  /** Pods with a counter entry. */
  podCounterIps(): string[] {
    return [...(this.maps.pod_counters?.keys() ?? [])].map(ipOf);
  }

  /** Starts counting for a pod (zeroes on every CPU); the programs only count into existing entries. */
  addPodCounters(ip: string): void {
    const m = this.#podCounters();
    m.updatePerCpu(ip16Key(ip), Array.from({ length: numPossibleCpus() }, () => new Uint8Array(m.valueSize)));
  }

  deletePodCounters(ip: string): boolean {
    return this.#podCounters().delete(ip16Key(ip));
  }

  /** A pod's counters summed over CPUs; undefined when it has no entry. */
  podCounters(ip: string): Record<PodStatName, bigint> | undefined {
    const per = this.#podCounters().lookupPerCpu(ip16Key(ip));
    if (!per) return undefined;
    const out = Object.fromEntries(POD_STAT_NAMES.map((n) => [n, 0n])) as Record<PodStatName, bigint>;
    for (const b of per) {
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      POD_STAT_NAMES.forEach((n, i) => out[n] += dv.getBigUint64(i * 8, true));
    }
    return out;
  }

  #podCounters(): RawPerCpuHash {
    if (!this.maps.pod_counters) throw new Error("pod_counters map not opened");
    return this.maps.pod_counters;
  }

  /** Lets the programs send monitor events until `untilNs` (CLOCK_MONOTONIC); 0 stops them. */
  setMonitorLease(untilNs: bigint): void {
    if (!this.maps.monitor_lease) throw new Error("monitor_lease map not opened");
    this.maps.monitor_lease.update(u32Key(0), u64Key(untilNs));
  }

  /** Whether a monitor holds the lease now (the programs send events). */
  monitorLeased(): boolean {
    const v = this.maps.monitor_lease?.lookup(u32Key(0));
    return v !== undefined && new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true) > 0n;
  }

  /** Counter totals summed over CPUs. */
  counters(): Record<CounterName, bigint> {
    const out = {} as Record<CounterName, bigint>;
    COUNTER_NAMES.forEach((name, i) => {
      const per = this.maps.counters.lookupPerCpu(u32Key(i)) ?? [];
      out[name] = per.reduce((s, b) => s + new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true), 0n);
    });
    return out;
  }
}
