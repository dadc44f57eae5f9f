// The libc functions the agent needs where Deno has no API: raw fds for cgroups and namespaces,
// sockets with options Deno does not expose (SO_MARK), ioctls, errno and printf-style formatting of
// libbpf's messages. Every function returns -1 and sets errno on failure unless noted.
//
// open and ioctl are variadic in C. Declaring their optional argument as a fixed one is sound on the
// x86-64 and arm64 Linux ABIs for integer and pointer arguments, which is all we pass.

export const LIBC_SYMBOLS = {
  __errno_location: {
    parameters: [],
    result: "pointer", // int * (this thread's errno)
  },
  strerror: {
    parameters: [
      "i32", // int errnum
    ],
    result: "pointer", // char * (static or thread-local text)
  },
  vsnprintf: {
    parameters: [
      "buffer", // char *str (out)
      "usize", // size_t size
      "pointer", // const char *format
      "pointer", // va_list ap (decays to a pointer on x86-64; passed by reference on arm64)
    ],
    result: "i32", // length the full text needs, excluding the NUL
  },
  getpid: {
    parameters: [],
    result: "i32", // pid_t
  },
  clock_gettime: {
    parameters: [
      "i32", // clockid_t clockid
      "buffer", // struct timespec *tp (out: tv_sec, tv_nsec as two longs)
    ],
    result: "i32", // 0, -1 + errno
  },
  open: {
    parameters: [
      "buffer", // const char *pathname
      "i32", // int flags
      "u32", // mode_t mode (read only with O_CREAT / O_TMPFILE)
    ],
    result: "i32", // fd
  },
  read: {
    parameters: [
      "i32", // int fd
      "buffer", // void *buf
      "usize", // size_t count
    ],
    result: "isize", // bytes read, 0 at end, -1 + errno
  },
  close: {
    parameters: [
      "i32", // int fd
    ],
    result: "i32", // 0
  },
  setns: {
    parameters: [
      "i32", // int fd
      "i32", // int nstype (CLONE_NEW*, 0: any)
    ],
    result: "i32", // 0
  },
  statfs: {
    parameters: [
      "buffer", // const char *path
      "buffer", // struct statfs *buf (out)
    ],
    result: "i32", // 0
  },
  socket: {
    parameters: [
      "i32", // int domain
      "i32", // int type (SOCK_* | SOCK_CLOEXEC | SOCK_NONBLOCK)
      "i32", // int protocol
    ],
    result: "i32", // fd
  },
  setsockopt: {
    parameters: [
      "i32", // int sockfd
      "i32", // int level
      "i32", // int optname
      "buffer", // const void *optval
      "u32", // socklen_t optlen
    ],
    result: "i32", // 0
  },
  getsockopt: {
    parameters: [
      "i32", // int sockfd
      "i32", // int level
      "i32", // int optname
      "buffer", // void *optval (out)
      "buffer", // socklen_t *optlen (in/out)
    ],
    result: "i32", // 0
  },
  bind: {
    parameters: [
      "i32", // int sockfd
      "buffer", // const struct sockaddr *addr
      "u32", // socklen_t addrlen
    ],
    result: "i32", // 0
  },
  listen: {
    parameters: [
      "i32", // int sockfd
      "i32", // int backlog
    ],
    result: "i32", // 0
  },
  accept: {
    parameters: [
      "i32", // int sockfd
      "buffer", // struct sockaddr *addr (out, may be NULL)
      "buffer", // socklen_t *addrlen (in/out, may be NULL)
    ],
    result: "i32", // fd
  },
  connect: {
    parameters: [
      "i32", // int sockfd
      "buffer", // const struct sockaddr *addr
      "u32", // socklen_t addrlen
    ],
    result: "i32", // 0
  },
  getsockname: {
    parameters: [
      "i32", // int sockfd
      "buffer", // struct sockaddr *addr (out)
      "buffer", // socklen_t *addrlen (in/out)
    ],
    result: "i32", // 0
  },
  if_nametoindex: {
    parameters: [
      "buffer", // const char *ifname
    ],
    result: "u32", // unsigned int ifindex, 0 + errno when there is no such interface
  },
  ioctl: {
    parameters: [
      "i32", // int fd
      "u64", // unsigned long request
      "buffer", // void *argp
    ],
    result: "i32", // request-specific, -1 on failure
  },
} as const satisfies Deno.ForeignLibraryInterface;

export type LibcSymbols = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
