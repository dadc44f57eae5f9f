// A loaded program reopened from its bpffs pin. Verifying a program costs from tens to hundreds of
// milliseconds; a pinned one is ready to attach the moment its fd is open.
import { closeFd } from "../ffi/libc.ts";
import { type ProgInfo, progInfoByFd, progMapIds } from "./info.ts";
import type { AttachableProgram } from "./link.ts";
import { openPin, OwnedFd } from "./owned_fd.ts";
import { pinFd } from "./pins.ts";
import type { ProgramFd } from "./prog_attach.ts";

export class PinnedProgram implements AttachableProgram, Disposable {
  readonly path: string;
  readonly info: ProgInfo;
  readonly #attachType: number | undefined;
  readonly #fd: OwnedFd;

  private constructor(path: string, fd: number, info: ProgInfo, attachType: number | undefined) {
    this.path = path;
    this.#fd = new OwnedFd(fd, `pinned program ${path}`);
    this.info = info;
    this.#attachType = attachType;
  }

  /**
   * Opens the program pinned at `path`; throws BpfError ENOENT when nothing is pinned there. The
   * kernel keeps no attach type that user space can read back, so the caller says which hook it was
   * loaded for, where it has one.
   */
  static open(path: string, attachType?: number): PinnedProgram {
    const fd = openPin(path, "prog");
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
    return this.#fd.fd;
  }

  /** Ids of the maps the program uses. */
  mapIds(): number[] {
    return progMapIds(this.fd);
  }

  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Pins a loaded program at `path` (creating missing directories), for a later PinnedProgram.open. */
export function pinProgram(prog: ProgramFd, path: string): void {
  pinFd(prog.fd, path);
}
