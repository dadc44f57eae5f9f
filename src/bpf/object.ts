// A compiled BPF object file (ELF with BTF) opened and loaded through libbpf. It knows nothing of
// what the programs do: callers look programs and maps up by name and attach them elsewhere.
//
// Maps can be pinned in one directory per object so that a restarted agent finds the state the
// previous run left (libbpf reuses a compatible pinned map instead of creating a new one). A pinned
// map whose shape differs from the object's is reported before loading, naming the map and the pin,
// since libbpf's own refusal is a bare EINVAL.
import { BpfError, checkLibbpf } from "../ffi/errors.ts";
import { collectLibbpfMessages, type LibbpfMessage } from "../ffi/libbpf_log.ts";
import { libbpf } from "../ffi/library.ts";
import { cString, lastErrno, readCString } from "../ffi/native.ts";
import type { AttachableProgram } from "./link.ts";
import { MapFd, PinnedMap } from "./map_fd.ts";
import { ensureBpffsDir, isPinned } from "./pins.ts";
import { mapTypeName, progTypeName } from "./types.ts";

export interface BpfObjectOpenOptions {
  /**
   * A bpffs directory in which every map the object declares is pinned as `<dir>/<map name>`:
   * reused when a compatible pin exists, created and pinned otherwise. libbpf's internal maps
   * (.data, .rodata, .bss, .kconfig) are never pinned: they belong to one load of the object.
   */
  pinMapsDir?: string;
}

/** A pinned map exists where the object wants its map, but with a different shape. */
export class PinMismatchError extends Error {
  override name = "PinMismatchError";
  constructor(
    readonly mapName: string,
    readonly pinPath: string,
    readonly differences: string[],
  ) {
    super(
      `map ${mapName}: the map pinned at ${pinPath} is incompatible with the object's ` +
        `(${differences.join("; ")}); remove the pin to recreate the map (its contents are lost)`,
    );
  }
}

/** No program or map of that name in the object. */
export class BpfNotFoundError extends Error {
  override name = "BpfNotFoundError";
  constructor(
    readonly kind: "program" | "map",
    readonly wanted: string,
    readonly objectPath: string,
    readonly available: string[],
  ) {
    super(
      `${objectPath} has no ${kind} named ${JSON.stringify(wanted)}; its ${kind}s: ` +
        (available.length ? available.join(", ") : "(none)"),
    );
  }
}

const openObjects = new FinalizationRegistry<Deno.PointerObject>((ptr) => {
  libbpf().bpf_object__close(ptr);
});

const programHandles = new WeakMap<BpfProgram, Deno.PointerObject>();

/** How many lines of libbpf's warnings a load error carries in its message. */
const LOAD_ERROR_LOG_LINES = 30;

export class BpfObject implements Disposable {
  readonly path: string;
  readonly pinMapsDir?: string;
  #ptr: Deno.PointerObject | null;
  #loadAttempted = false;
  #loaded = false;
  readonly #programs = new Map<string, BpfProgram>();
  readonly #maps = new Map<string, BpfMap>();

  private constructor(path: string, ptr: Deno.PointerObject, pinMapsDir: string | undefined) {
    this.path = path;
    this.#ptr = ptr;
    this.pinMapsDir = pinMapsDir;
    openObjects.register(this, ptr, this);
  }

  /** Opens (parses) the object file; nothing reaches the kernel until load(). */
  static open(path: string, opts: BpfObjectOpenOptions = {}): BpfObject {
    const pinMapsDir = opts.pinMapsDir?.replace(/\/+$/, "");
    if (pinMapsDir !== undefined) ensureBpffsDir(pinMapsDir);
    const messages: LibbpfMessage[] = [];
    const [ptr, errno] = collectLibbpfMessages(messages, () => {
      const p = libbpf().bpf_object__open_file(cString(path), null);
      return [p, p === null ? lastErrno() : 0] as const;
    });
    if (ptr === null) {
      throw new BpfError(`bpf_object__open_file(${path})`, errno, { log: joinMessages(messages) });
    }
    const obj = new BpfObject(path, ptr, pinMapsDir);
    try {
      obj.#discover();
    } catch (err) {
      obj.close();
      throw err;
    }
    return obj;
  }

  /**
   * Opens an object from its bytes. A compiled agent carries its objects inside the executable, where
   * libbpf cannot open them by path. `name` names the object in messages and in libbpf's logs.
   */
  static openMem(bytes: Uint8Array, name: string, opts: BpfObjectOpenOptions = {}): BpfObject {
    const pinMapsDir = opts.pinMapsDir?.replace(/\/+$/, "");
    if (pinMapsDir !== undefined) ensureBpffsDir(pinMapsDir);
    // libbpf reads the ELF from our buffer until load() and keeps the name pointer: both stay
    // referenced by the object for its whole life.
    const buf = new Uint8Array(bytes);
    const cname = cString(name);
    const openOpts = new Uint8Array(16);
    const view = new DataView(openOpts.buffer);
    view.setBigUint64(0, 16n, true);
    view.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(cname))), true);
    const messages: LibbpfMessage[] = [];
    const [ptr, errno] = collectLibbpfMessages(messages, () => {
      const p = libbpf().bpf_object__open_mem(buf, BigInt(buf.byteLength), openOpts);
      return [p, p === null ? lastErrno() : 0] as const;
    });
    if (ptr === null) {
      throw new BpfError(`bpf_object__open_mem(${name})`, errno, { log: joinMessages(messages) });
    }
    const obj = new BpfObject(name, ptr, pinMapsDir);
    obj.#keepAlive = [buf, cname, openOpts];
    try {
      obj.#discover();
    } catch (err) {
      obj.close();
      throw err;
    }
    return obj;
  }

  #keepAlive: unknown[] = [];

  #discover(): void {
    const lib = libbpf();
    const ptr = this.#handle();
    for (
      let p = lib.bpf_object__next_program(ptr, null);
      p !== null;
      p = lib.bpf_object__next_program(ptr, p)
    ) {
      const prog = new BpfProgram(this, p);
      this.#programs.set(prog.name, prog);
    }
    for (let m = lib.bpf_object__next_map(ptr, null); m !== null; m = lib.bpf_object__next_map(ptr, m)) {
      const internal = lib.bpf_map__is_internal(m);
      const name = readCString(lib.bpf_map__name(m)) ?? "";
      if (!internal && this.pinMapsDir !== undefined) {
        const pin = `${this.pinMapsDir}/${name}`;
        checkLibbpf(`bpf_map__set_pin_path(${name}, ${pin})`, lib.bpf_map__set_pin_path(m, cString(pin)));
      }
      this.#maps.set(name, new BpfMap(this, m, name, internal));
    }
  }

  get loaded(): boolean {
    return this.#loaded;
  }

  get closed(): boolean {
    return this.#ptr === null;
  }

  /**
   * Creates (or reuses pinned) maps and loads every program into the kernel. A failure carries
   * libbpf's warnings, the verifier log included, in `BpfError.log`; the object must then be closed.
   */
  load(): void {
    const ptr = this.#handle();
    if (this.#loadAttempted) {
      throw new Error(`${this.path}: load() was already called; open the object again to retry`);
    }
    this.#checkPinnedMaps();
    this.#loadAttempted = true;
    const messages: LibbpfMessage[] = [];
    const ret = collectLibbpfMessages(messages, () => libbpf().bpf_object__load(ptr));
    if (ret < 0) {
      const warnings = messages.filter((m) => m.level === "warning");
      throw new BpfError(`bpf_object__load(${this.path})`, -ret, {
        log: joinMessages(warnings),
        detail: tailLines(joinMessages(warnings), LOAD_ERROR_LOG_LINES),
      });
    }
    this.#loaded = true;
  }

  // libbpf would refuse an incompatible pin with a bare EINVAL; say which map and why instead.
  #checkPinnedMaps(): void {
    for (const map of this.#maps.values()) {
      const pin = map.pinPath;
      if (pin === undefined || !isPinned(pin)) continue;
      let pinned: PinnedMap;
      try {
        pinned = PinnedMap.open(pin);
      } catch (err) {
        throw new PinMismatchError(map.name, pin, [err instanceof Error ? err.message : String(err)]);
      }
      try {
        const diffs: string[] = [];
        const compare = (what: string, have: number | string, want: number | string) => {
          if (have !== want) diffs.push(`${what}: pinned ${have}, object ${want}`);
        };
        compare("type", mapTypeName(pinned.info.type), mapTypeName(map.type));
        compare("key size", pinned.info.keySize, map.keySize);
        compare("value size", pinned.info.valueSize, map.valueSize);
        compare("max entries", pinned.info.maxEntries, map.maxEntries);
        compare("flags", pinned.info.flags, map.flags);
        if (diffs.length > 0) throw new PinMismatchError(map.name, pin, diffs);
      } finally {
        pinned.close();
      }
    }
  }

  /** The program named `name` (the C function name); throws BpfNotFoundError listing the others. */
  program(name: string): BpfProgram {
    this.#handle();
    const prog = this.#programs.get(name);
    if (!prog) throw new BpfNotFoundError("program", name, this.path, [...this.#programs.keys()]);
    return prog;
  }

  programs(): BpfProgram[] {
    this.#handle();
    return [...this.#programs.values()];
  }

  /** The map named `name`; throws BpfNotFoundError listing the others. */
  map(name: string): BpfMap {
    this.#handle();
    const map = this.#maps.get(name);
    if (!map) throw new BpfNotFoundError("map", name, this.path, [...this.#maps.keys()]);
    return map;
  }

  /** Every map, libbpf's internal ones (.rodata, .bss, ...) included; see BpfMap.internal. */
  maps(): BpfMap[] {
    this.#handle();
    return [...this.#maps.values()];
  }

  /**
   * Releases the object: its program and map fds close. Attachments made through links, and pinned
   * maps, survive as long as something else (a pin, a link) holds them.
   */
  close(): void {
    const ptr = this.#ptr;
    if (ptr === null) return;
    this.#ptr = null;
    openObjects.unregister(this);
    libbpf().bpf_object__close(ptr);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error(`BPF object ${this.path} is closed`);
    return this.#ptr;
  }

  /**
   * @internal throws once the object is closed: nativeProgram and BpfMap call it before touching a
   * libbpf handle, which closing the object frees.
   */
  requireOpen(): void {
    this.#handle();
  }
}

export class BpfProgram implements AttachableProgram {
  readonly object: BpfObject;
  readonly name: string;
  readonly sectionName: string;
  /** enum bpf_prog_type, see ProgType. */
  readonly type: number;

  /** @internal created by BpfObject.open */
  constructor(object: BpfObject, ptr: Deno.PointerObject) {
    const lib = libbpf();
    this.object = object;
    this.name = readCString(lib.bpf_program__name(ptr)) ?? "";
    this.sectionName = readCString(lib.bpf_program__section_name(ptr)) ?? "";
    this.type = lib.bpf_program__type(ptr);
    programHandles.set(this, ptr);
  }

  get typeName(): string {
    return progTypeName(this.type);
  }

  /** enum bpf_attach_type the section name gave it, see AttachType. */
  get attachType(): number {
    return libbpf().bpf_program__expected_attach_type(nativeProgram(this));
  }

  /** The loaded program's fd, owned by its object. */
  get fd(): number {
    const ptr = nativeProgram(this);
    if (!this.object.loaded) throw new Error(`program ${this.name}: ${this.object.path} is not loaded`);
    return checkLibbpf(`bpf_program__fd(${this.name})`, libbpf().bpf_program__fd(ptr));
  }
}

/** The libbpf handle of a program whose object is still open (for the attach functions). */
export function nativeProgram(prog: BpfProgram): Deno.PointerObject {
  prog.object.requireOpen();
  const ptr = programHandles.get(prog);
  if (ptr === undefined) throw new Error(`program ${prog.name} has no native handle`);
  return ptr;
}

export class BpfMap extends MapFd {
  readonly object: BpfObject;
  readonly name: string;
  /** A map libbpf made for global variables (.data/.rodata/.bss/.kconfig), never pinned. */
  readonly internal: boolean;
  readonly #ptr: Deno.PointerObject;

  /** @internal created by BpfObject.open */
  constructor(object: BpfObject, ptr: Deno.PointerObject, name: string, internal: boolean) {
    super();
    this.object = object;
    this.#ptr = ptr;
    this.name = name;
    this.internal = internal;
  }

  #open(): Deno.PointerObject {
    this.object.requireOpen();
    return this.#ptr;
  }

  get type(): number {
    return libbpf().bpf_map__type(this.#open());
  }
  get keySize(): number {
    return libbpf().bpf_map__key_size(this.#open());
  }
  get valueSize(): number {
    return libbpf().bpf_map__value_size(this.#open());
  }
  get maxEntries(): number {
    return libbpf().bpf_map__max_entries(this.#open());
  }
  get flags(): number {
    return libbpf().bpf_map__map_flags(this.#open());
  }

  /** Where the map is (or will be, after load) pinned; undefined when it is not pinned. */
  get pinPath(): string | undefined {
    return readCString(libbpf().bpf_map__pin_path(this.#open()));
  }

  get fd(): number {
    const ptr = this.#open();
    if (!this.object.loaded) throw new Error(`map ${this.name}: ${this.object.path} is not loaded`);
    return checkLibbpf(`bpf_map__fd(${this.name})`, libbpf().bpf_map__fd(ptr));
  }

  /** Sets the capacity the map is created with; only before the object is loaded. */
  setMaxEntries(n: number): void {
    if (!Number.isInteger(n) || n <= 0 || n > 0xffffffff) {
      throw new RangeError(`map ${this.name}: capacity ${n}`);
    }
    checkLibbpf(
      `bpf_map__set_max_entries(${this.name}, ${n})`,
      libbpf().bpf_map__set_max_entries(this.#open(), n),
    );
  }

  /** Removes the map's pin; the map itself lives on while the object or a program uses it. */
  unpin(): void {
    const pin = this.pinPath;
    if (pin === undefined) throw new Error(`map ${this.name} has no pin path`);
    checkLibbpf(`bpf_map__unpin(${this.name}, ${pin})`, libbpf().bpf_map__unpin(this.#open(), null));
  }
}

function joinMessages(messages: LibbpfMessage[]): string {
  return messages.map((m) => m.text).join("\n");
}

function tailLines(text: string, n: number): string | undefined {
  if (text === "") return undefined;
  const lines = text.split("\n");
  if (lines.length <= n) return text;
  return `... (${lines.length - n} earlier lines in the error's log and the libbpf logger)\n` +
    lines.slice(-n).join("\n");
}
