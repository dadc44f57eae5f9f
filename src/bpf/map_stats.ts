// Element counts of the kernel's BPF maps, as the kernel itself keeps them, read through a map
// iterator program (bpf/stats.bpf.c, Linux 6.6+). One read costs the same however full the maps are;
// walking keys costs two system calls per entry, which on a full 64 Ki-entry table means 130,000 FFI
// calls on the thread that also serves the CNI plugin and the health probes.
import { checkLibbpf, checkLibbpfPtr } from "../ffi/errors.ts";
import { closeFd, readAllFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { BpfObject, nativeProgram } from "./object.ts";

export class MapStats implements Disposable {
  readonly #obj: BpfObject;
  /** libbpf's iterator link (struct bpf_link *): an iterator has no pin and no update. */
  #link: Deno.PointerObject | null;

  private constructor(obj: BpfObject, link: Deno.PointerObject) {
    this.#obj = obj;
    this.#link = link;
  }

  /** Loads the iterator from the object's bytes; throws (a BpfError) where the kernel lacks it. */
  static load(bytes: Uint8Array, program: string, name = "stats.bpf.o"): MapStats {
    const obj = BpfObject.openMem(bytes, name);
    try {
      obj.load();
      const prog = obj.program(program);
      const ptr = checkLibbpfPtr(
        `bpf_program__attach_iter(${program})`,
        libbpf().bpf_program__attach_iter(nativeProgram(prog), null),
      );
      return new MapStats(obj, ptr);
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /** Map id -> number of elements, for every map on the system. */
  counts(): Map<number, number> {
    if (this.#link === null) throw new Error("map stats iterator is closed");
    const fd = checkLibbpf("bpf_iter_create", libbpf().bpf_iter_create(libbpf().bpf_link__fd(this.#link)));
    let text: string;
    try {
      text = new TextDecoder().decode(readAllFd(fd));
    } finally {
      closeFd(fd);
    }
    const out = new Map<number, number>();
    for (const line of text.split("\n")) {
      const [id, n] = line.split(" ");
      if (id && n) out.set(Number(id), Number(n));
    }
    return out;
  }

  close(): void {
    if (this.#link !== null) libbpf().bpf_link__destroy(this.#link);
    this.#link = null;
    this.#obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
