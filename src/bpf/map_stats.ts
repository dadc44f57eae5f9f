// Element counts of the kernel's BPF maps, as the kernel itself keeps them, read through a map
// iterator program (bpf/stats.bpf.c, Linux 6.6+). One read costs the same however full the maps are;
// walking keys costs two system calls per entry, which on a full 64 Ki-entry table means 130,000 FFI
// calls on the thread that also serves the CNI plugin and the health probes.
import { checkLibbpf, checkLibbpfPtr } from "../ffi/errors.ts";
import { closeFd, readAllFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { BpfLink } from "./link.ts";
import { BpfObject, nativeProgram } from "./object.ts";

export class MapStats implements Disposable {
  readonly #obj: BpfObject;
  readonly #link: BpfLink;

  private constructor(obj: BpfObject, link: BpfLink) {
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
      return new MapStats(obj, BpfLink.fromNative(ptr, `${program} iterator`));
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /** Map id -> number of elements, for every map on the system. */
  counts(): Map<number, number> {
    const fd = checkLibbpf("bpf_iter_create", libbpf().bpf_iter_create(this.#link.fd));
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
    this.#link.close();
    this.#obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
