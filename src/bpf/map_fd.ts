// Element operations on a BPF map fd with raw bytes for keys and values. Typed codecs live above
// this layer; here we only guarantee that every buffer handed to the kernel has the size the map
// declares, since the kernel copies exactly key_size / value_size bytes and trusts us on the rest.
import { checkLibbpf } from "../ffi/errors.ts";
import { Errno } from "../ffi/errno.ts";
import { closeFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { asBuffer } from "../ffi/native.ts";
import { type MapInfo, mapInfoByFd } from "./info.ts";
import { openPin, OwnedFd } from "./owned_fd.ts";
import { isPerCpuMapType, mapTypeName } from "./types.ts";

/** Create the element or replace it. */
export const BPF_ANY = 0;
/** Create only; EEXIST when the key is present. */
export const BPF_NOEXIST = 1;
/** Replace only; ENOENT when the key is absent. */
export const BPF_EXIST = 2;
export type MapUpdateFlags = typeof BPF_ANY | typeof BPF_NOEXIST | typeof BPF_EXIST;

let possibleCpus: number | undefined;

/** The kernel's possible-CPU count: how many values a per-CPU map holds per key. */
export function numPossibleCpus(): number {
  possibleCpus ??= checkLibbpf("libbpf_num_possible_cpus", libbpf().libbpf_num_possible_cpus());
  return possibleCpus;
}

/** Map operations shared by maps of a loaded object and maps opened from a pin. */
export abstract class MapFd {
  abstract readonly name: string;
  abstract readonly type: number;
  abstract readonly keySize: number;
  abstract readonly valueSize: number;
  abstract readonly maxEntries: number;
  /** The map's fd; throws when the handle is closed (or its object not loaded yet). */
  abstract get fd(): number;

  get isPerCpu(): boolean {
    return isPerCpuMapType(this.type);
  }

  /** The value for `key`, or undefined when there is no such element. */
  lookup(key: Uint8Array): Uint8Array | undefined {
    this.#requireShared("lookup", "lookupPerCpu");
    const value = new Uint8Array(this.valueSize);
    return this.#lookupInto(key, value) ? value : undefined;
  }

  update(key: Uint8Array, value: Uint8Array, flags: MapUpdateFlags = BPF_ANY): void {
    this.#requireShared("update", "updatePerCpu");
    this.#checkSize("value", value, this.valueSize);
    this.#update(key, value, flags);
  }

  /** Deletes `key`; false when it was not there. */
  delete(key: Uint8Array): boolean {
    this.#checkSize("key", key, this.keySize);
    const ret = libbpf().bpf_map_delete_elem(this.fd, asBuffer(key));
    if (ret === -Errno.ENOENT) return false;
    checkLibbpf(`bpf_map_delete_elem(${this.name})`, ret);
    return true;
  }

  /**
   * Every key, in the kernel's iteration order. Deleting the key just yielded is safe. If another
   * writer removes it meanwhile, a hash map restarts iteration from its first key, so keys may then
   * repeat.
   */
  *keys(): Generator<Uint8Array> {
    let prev: Uint8Array<ArrayBuffer> | null = null;
    for (;;) {
      const next = new Uint8Array(this.keySize);
      const ret = libbpf().bpf_map_get_next_key(this.fd, prev, next);
      if (ret === -Errno.ENOENT) return;
      checkLibbpf(`bpf_map_get_next_key(${this.name})`, ret);
      yield next;
      prev = next;
    }
  }

  /** Every [key, value]; elements deleted between listing and reading are skipped. */
  *entries(): Generator<[Uint8Array, Uint8Array]> {
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value !== undefined) yield [key, value];
    }
  }

  /** For per-CPU maps: one value per possible CPU (index = CPU number), or undefined. */
  lookupPerCpu(key: Uint8Array): Uint8Array[] | undefined {
    this.#requirePerCpu("lookupPerCpu");
    const stride = perCpuStride(this.valueSize);
    const all = new Uint8Array(stride * numPossibleCpus());
    if (!this.#lookupInto(key, all)) return undefined;
    return Array.from(
      { length: numPossibleCpus() },
      (_, cpu) => all.slice(cpu * stride, cpu * stride + this.valueSize),
    );
  }

  /** For per-CPU maps: sets every CPU's value (one entry per possible CPU). */
  updatePerCpu(key: Uint8Array, values: Uint8Array[], flags: MapUpdateFlags = BPF_ANY): void {
    this.#requirePerCpu("updatePerCpu");
    const cpus = numPossibleCpus();
    if (values.length !== cpus) {
      throw new RangeError(
        `map ${this.name}: ${values.length} per-CPU values given, the kernel has ${cpus} possible CPUs`,
      );
    }
    const stride = perCpuStride(this.valueSize);
    const all = new Uint8Array(stride * cpus);
    values.forEach((v, cpu) => {
      this.#checkSize(`value for CPU ${cpu}`, v, this.valueSize);
      all.set(v, cpu * stride);
    });
    this.#update(key, all, flags);
  }

  #lookupInto(key: Uint8Array, out: Uint8Array<ArrayBuffer>): boolean {
    this.#checkSize("key", key, this.keySize);
    const ret = libbpf().bpf_map_lookup_elem(this.fd, asBuffer(key), out);
    if (ret === -Errno.ENOENT) return false;
    checkLibbpf(`bpf_map_lookup_elem(${this.name})`, ret);
    return true;
  }

  #update(key: Uint8Array, value: Uint8Array, flags: MapUpdateFlags): void {
    this.#checkSize("key", key, this.keySize);
    checkLibbpf(
      `bpf_map_update_elem(${this.name})`,
      libbpf().bpf_map_update_elem(this.fd, asBuffer(key), asBuffer(value), BigInt(flags)),
    );
  }

  #checkSize(what: string, bytes: Uint8Array, expected: number): void {
    if (bytes.length !== expected) {
      throw new RangeError(`map ${this.name}: ${what} is ${bytes.length} bytes, the map's are ${expected}`);
    }
  }

  // A per-CPU lookup writes valueSize bytes for every CPU: a single-value buffer would overflow.
  #requireShared(op: string, instead: string): void {
    if (this.isPerCpu) {
      throw new TypeError(
        `map ${this.name} is ${mapTypeName(this.type)}: use ${instead}() instead of ${op}()`,
      );
    }
  }

  #requirePerCpu(op: string): void {
    if (!this.isPerCpu) {
      throw new TypeError(
        `map ${this.name} is ${mapTypeName(this.type)}, not a per-CPU map: ${op}() does not apply`,
      );
    }
  }
}

/** Per-CPU values are laid out at 8-byte strides regardless of the value size. */
export function perCpuStride(valueSize: number): number {
  return Math.ceil(valueSize / 8) * 8;
}

/** A map opened from its bpffs pin. Owns its fd: close it (or use `using`). */
export class PinnedMap extends MapFd implements Disposable {
  readonly path: string;
  readonly info: MapInfo;
  readonly #fd: OwnedFd;

  private constructor(path: string, fd: number, info: MapInfo) {
    super();
    this.path = path;
    this.#fd = new OwnedFd(fd, `pinned map ${path}`);
    this.info = info;
  }

  get name(): string {
    return this.info.name;
  }
  get type(): number {
    return this.info.type;
  }
  get keySize(): number {
    return this.info.keySize;
  }
  get valueSize(): number {
    return this.info.valueSize;
  }
  get maxEntries(): number {
    return this.info.maxEntries;
  }

  get fd(): number {
    return this.#fd.fd;
  }

  get closed(): boolean {
    return this.#fd.closed;
  }

  /** Opens the map pinned at `path`; throws BpfError ENOENT when nothing is pinned there. */
  static open(path: string): PinnedMap {
    const fd = openPin(path, "map");
    try {
      return new PinnedMap(path, fd, mapInfoByFd(fd));
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens the map pinned at `path` (see PinnedMap.open). */
export function openPinnedMap(path: string): PinnedMap {
  return PinnedMap.open(path);
}
