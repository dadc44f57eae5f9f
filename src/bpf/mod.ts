// The generic BPF loader: open/load objects, pin maps, attach programs, inspect what is attached.
// It knows nothing of what the programs do; the datapath modules build on it.
export {
  BpfMap,
  BpfNotFoundError,
  BpfObject,
  type BpfObjectOpenOptions,
  BpfProgram,
  PinMismatchError,
} from "./object.ts";
export {
  BPF_ANY,
  BPF_EXIST,
  BPF_NOEXIST,
  bpfFdKind,
  MapFd,
  type MapUpdateFlags,
  numPossibleCpus,
  openPinnedMap,
  perCpuStride,
  PinnedMap,
} from "./map_fd.ts";
export { attachCgroup, attachXdp, BpfLink } from "./link.ts";
export {
  attachSkMsg,
  BPF_F_ALLOW_MULTI,
  BPF_F_QUERY_EFFECTIVE,
  type CgroupAttachments,
  cgroupQuery,
  detachSkMsg,
  progAttach,
  progDetach,
  type ProgramFd,
} from "./prog_attach.ts";
export {
  tcAttach,
  type TcAttachOptions,
  tcDestroyHook,
  tcDetach,
  type TcDirection,
  tcEnsureHook,
  type TcFilter,
  type TcFilterId,
  tcQuery,
} from "./tc.ts";
export {
  XDP_FLAGS,
  xdpAttach,
  type XdpAttachMode,
  type XdpAttachOptions,
  xdpDetach,
  type XdpDetachOptions,
  type XdpMode,
  xdpQuery,
  xdpQueryId,
  type XdpState,
} from "./xdp.ts";
export {
  type LinkInfo,
  linkInfoByFd,
  type MapInfo,
  mapInfoByFd,
  progFdById,
  type ProgInfo,
  progInfo,
  progInfoByFd,
} from "./info.ts";
export {
  BPF_FS_MAGIC,
  BpffsError,
  ensureBpffsDir,
  isOnBpffs,
  isPinned,
  pinFd,
  removePinTree,
} from "./pins.ts";
export {
  AttachType,
  attachTypeName,
  isPerCpuMapType,
  MapType,
  mapTypeName,
  ProgType,
  progTypeName,
} from "./types.ts";

// The native layer underneath, for callers that need errors or raw libc calls.
export { BpfError, describeLibbpfError, describeLibcError, hasErrno, LibcError } from "../ffi/errors.ts";
export { Errno, errnoName } from "../ffi/errno.ts";
export { LIBBPF_SPEC, LIBC_SPEC, LibraryLoadError, loadedLibraryPaths } from "../ffi/library.ts";
export { collectLibbpfMessages, type LibbpfLevel, type LibbpfMessage } from "../ffi/libbpf_log.ts";
export {
  acceptFd,
  AF_INET,
  bindInet4,
  CLONE_NEWNET,
  closeFd,
  connectInet4,
  getPid,
  getsockoptInt,
  ifNameToIndex,
  ioctlPtr,
  listenFd,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  openFd,
  parseSockaddrIn4,
  setnsFd,
  setsockoptInt,
  SO_MARK,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  sockaddrIn4,
  socketFd,
  sockNameInet4,
  SOL_IP,
  SOL_SOCKET,
  statfsType,
} from "../ffi/libc.ts";
