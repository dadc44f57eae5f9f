// The library: open and load compiled BPF objects through libbpf, attach their programs, read and write
// their maps, and encode map keys and values in C struct layout. None of it knows what the programs
// do; the node agent (main.ts) is built on it, and its own modules stay private so that they can
// change with the datapath. Failures are typed errors carrying the operation and the errno.
// tests/unit/public_api.test.ts lists every name: a name added here is added there on purpose.
export { VERSION } from "./src/version.ts";

// Objects, programs and maps.
export { BpfMap, BpfObject, type BpfObjectOpenOptions, BpfProgram } from "./src/bpf/object.ts";
export {
  BPF_ANY,
  BPF_EXIST,
  BPF_NOEXIST,
  MapFd,
  type MapUpdateFlags,
  numPossibleCpus,
  openPinnedMap,
  PinnedMap,
} from "./src/bpf/map_fd.ts";
export { PinnedProgram, pinProgram } from "./src/bpf/pinned_program.ts";
export { RingBuffer } from "./src/bpf/ring_buffer.ts";
export { AttachType, MapType, ProgType } from "./src/bpf/types.ts";
export { type LinkInfo, type MapInfo, mapInfoByFd, type ProgInfo, progInfo } from "./src/bpf/info.ts";
export { isPinned, pinFd, removePinTree } from "./src/bpf/pins.ts";

// Attaching programs: cgroup and XDP through links (pinned, they outlive the process), sk_msg to a
// sockmap, TC filters on clsact.
export {
  type AttachableProgram,
  attachCgroup,
  attachXdp,
  BpfLink,
  type XdpLinkMode,
} from "./src/bpf/link.ts";
export { attachSkMsg, detachSkMsg, type ProgramFd } from "./src/bpf/prog_attach.ts";
export {
  tcAttach,
  type TcAttachOptions,
  tcDetach,
  type TcDirection,
  type TcFilter,
  type TcFilterId,
  tcQuery,
} from "./src/bpf/tc.ts";

// Map keys and values in C layout.
export {
  type ArrayType,
  CodecError,
  decode,
  encode,
  type FieldLayout,
  type FieldType,
  layout,
  type Scalar,
  type StructDef,
  type StructLayout,
  type Value,
} from "./src/maps/codec.ts";

// Typed errors.
export { BpfError, hasErrno, LibcError } from "./src/ffi/errors.ts";
export { Errno, errnoName } from "./src/ffi/errno.ts";
export { type LibraryAttempt, LibraryLoadError } from "./src/ffi/library.ts";
export { BpfNotFoundError, PinMismatchError } from "./src/bpf/object.ts";
export { BpffsError } from "./src/bpf/pins.ts";
