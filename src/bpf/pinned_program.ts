// A loaded program reopened from its bpffs pin. Verifying a program costs from tens to hundreds of
// milliseconds; a pinned one is ready to attach the moment its fd is open.
import { checkLibbpf } from "../ffi/errors.ts";
import { closeFd } from "../ffi/libc.ts";
import { libbpf } from "../ffi/library.ts";
import { cString } from "../ffi/native.ts";
import { type ProgInfo, progInfoByFd, progMapIds } from "./info.ts";
import type { AttachableProgram } from "./link.ts";
import { pinFd } from "./pins.ts";
import type { ProgramFd } from "./prog_attach.ts";

const pinnedProgs = new FinalizationRegistry<number>((fd) => {
  try {
    closeFd(fd);
  } catch {
    // Nothing to report to at collection time.
  }
});

export class PinnedProgram implements AttachableProgram, Disposable {
  readonly path: string;
  readonly info: ProgInfo;
  readonly #attachType: number | undefined;
  #fd: number;

  private constructor(path: string, fd: number, info: ProgInfo, attachType: number | undefined) {
    this.path = path;
    this.#fd = fd;
    this.info = info;
    this.#attachType = attachType;
    pinnedProgs.register(this, fd, this);
  }

  /**
   * Opens the program pinned at `path`; throws BpfError ENOENT when nothing is pinned there. The
   * kernel keeps no attach type that user space can read back, so the caller says which hook it was
   * loaded for, where it has one.
   */
  static open(path: string, attachType?: number): PinnedProgram {
    const fd = checkLibbpf(`bpf_obj_get(${path})`, libbpf().bpf_obj_get(cString(path)));
    try {
      return new PinnedProgram(path, fd, progInfoByFd(fd), attachType);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** enum bpf_attach_type, as given to open(). */
  get attachType(): number {
    if (this.#attachType === undefined) throw new Error(`pinned program ${this.path}: no attach type given`);
    return this.#attachType;
  }

  /** The kernel's (15-character) copy of the program's name. */
  get name(): string {
    return this.info.name;
  }

  get fd(): number {
    if (this.#fd < 0) throw new Error(`pinned program ${this.path} is closed`);
    return this.#fd;
  }

  /** Ids of the maps the program uses. */
  mapIds(): number[] {
    return progMapIds(this.fd);
  }

  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    pinnedProgs.unregister(this);
    closeFd(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Pins a loaded program at `path` (creating missing directories), for a later PinnedProgram.open. */
export function pinProgram(prog: ProgramFd, path: string): void {
  pinFd(prog.fd, path);
}
