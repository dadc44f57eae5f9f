// Every libbpf.so.1 function the agent calls, with the C signature of each parameter. The layouts
// and names are those of libbpf 1.1.2 (Debian 12), the oldest library the agent supports: nothing
// here may rely on a symbol added later, or dlopen fails on the hosts we target.
//
// Conventions of this table:
// - "buffer" is memory the caller owns for the duration of the call (C strings, keys, out-params);
// - "pointer" is a handle libbpf owns (struct bpf_object *, struct bpf_link *, ...) or a C string
//   libbpf returns;
// - int-returning functions give -errno on failure; pointer-returning ones give NULL and set errno.

export const LIBBPF_SYMBOLS = {
  // ---- objects -------------------------------------------------------------------------------
  bpf_object__open_file: {
    parameters: [
      "buffer", // const char *path
      "pointer", // const struct bpf_object_open_opts *opts (NULL: defaults)
    ],
    result: "pointer", // struct bpf_object *, NULL + errno on failure
  },
  bpf_object__open_mem: {
    parameters: [
      "buffer", // const void *obj_buf (must outlive the object: libbpf reads it until load)
      "usize", // size_t obj_buf_sz
      "buffer", // const struct bpf_object_open_opts *opts (sz + object_name are enough)
    ],
    result: "pointer", // struct bpf_object *, NULL + errno on failure
  },
  bpf_object__load: {
    parameters: [
      "pointer", // struct bpf_object *obj
    ],
    result: "i32", // 0 or -errno
  },
  bpf_object__close: {
    parameters: [
      "pointer", // struct bpf_object *obj
    ],
    result: "void",
  },
  bpf_object__find_program_by_name: {
    parameters: [
      "pointer", // const struct bpf_object *obj
      "buffer", // const char *name
    ],
    result: "pointer", // struct bpf_program *, NULL + errno ENOENT when absent
  },
  bpf_object__find_map_by_name: {
    parameters: [
      "pointer", // const struct bpf_object *obj
      "buffer", // const char *name
    ],
    result: "pointer", // struct bpf_map *, NULL + errno ENOENT when absent
  },
  bpf_object__next_program: {
    parameters: [
      "pointer", // const struct bpf_object *obj
      "pointer", // struct bpf_program *prev (NULL: first)
    ],
    result: "pointer", // struct bpf_program *, NULL after the last
  },
  bpf_object__next_map: {
    parameters: [
      "pointer", // const struct bpf_object *obj
      "pointer", // const struct bpf_map *prev (NULL: first)
    ],
    result: "pointer", // struct bpf_map *, NULL after the last
  },

  // ---- programs ------------------------------------------------------------------------------
  bpf_program__name: {
    parameters: [
      "pointer", // const struct bpf_program *prog
    ],
    result: "pointer", // const char *
  },
  bpf_program__section_name: {
    parameters: [
      "pointer", // const struct bpf_program *prog
    ],
    result: "pointer", // const char *
  },
  bpf_program__fd: {
    parameters: [
      "pointer", // const struct bpf_program *prog
    ],
    result: "i32", // fd, or -errno before load
  },
  bpf_program__type: {
    parameters: [
      "pointer", // const struct bpf_program *prog
    ],
    result: "u32", // enum bpf_prog_type
  },
  bpf_program__expected_attach_type: {
    parameters: [
      "pointer", // const struct bpf_program *prog
    ],
    result: "u32", // enum bpf_attach_type (set from the section name at open)
  },
  bpf_program__attach_iter: {
    parameters: [
      "pointer", // const struct bpf_program *prog
      "pointer", // const struct bpf_iter_attach_opts *opts (NULL: defaults)
    ],
    result: "pointer", // struct bpf_link *, NULL + errno on failure
  },
  bpf_iter_create: {
    parameters: [
      "i32", // int link_fd
    ],
    result: "i32", // fd to read the iterator's output from, or -errno
  },
  bpf_link_create: {
    parameters: [
      "i32", // int prog_fd
      "i32", // int target_fd (an ifindex for BPF_XDP)
      "u32", // enum bpf_attach_type attach_type
      "buffer", // const struct bpf_link_create_opts *opts
    ],
    result: "i32", // link fd, or -errno
  },
  bpf_link_update: {
    parameters: [
      "i32", // int link_fd
      "i32", // int new_prog_fd
      "buffer", // const struct bpf_link_update_opts *opts (NULL: unconditional)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_link_detach: {
    parameters: [
      "i32", // int link_fd
    ],
    result: "i32", // 0 or -errno
  },

  // ---- maps ----------------------------------------------------------------------------------
  bpf_map__name: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "pointer", // const char *
  },
  bpf_map__fd: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "i32", // fd, or negative before load
  },
  bpf_map__type: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "u32", // enum bpf_map_type
  },
  bpf_map__key_size: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "u32", // __u32
  },
  bpf_map__value_size: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "u32", // __u32
  },
  bpf_map__max_entries: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "u32", // __u32
  },
  bpf_map__map_flags: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "u32", // __u32
  },
  bpf_map__is_internal: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "bool", // true for .data/.rodata/.bss/.kconfig maps libbpf synthesises
  },
  bpf_map__set_max_entries: {
    parameters: [
      "pointer", // struct bpf_map *map
      "u32", // __u32 max_entries
    ],
    result: "i32", // 0, or -errno (e.g. after load)
  },
  bpf_map__set_pin_path: {
    parameters: [
      "pointer", // struct bpf_map *map
      "buffer", // const char *path (NULL clears)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_map__pin_path: {
    parameters: [
      "pointer", // const struct bpf_map *map
    ],
    result: "pointer", // const char *, NULL when no pin path is set
  },
  bpf_map__unpin: {
    parameters: [
      "pointer", // struct bpf_map *map
      "buffer", // const char *path (NULL: the map's pin path)
    ],
    result: "i32", // 0 or -errno
  },

  // ---- links ---------------------------------------------------------------------------------
  bpf_link__fd: {
    parameters: [
      "pointer", // const struct bpf_link *link
    ],
    result: "i32", // int fd
  },
  bpf_link__destroy: {
    parameters: [
      "pointer", // struct bpf_link *link
    ],
    result: "i32", // 0 or -errno; frees the struct either way
  },

  // ---- low-level syscall wrappers (bpf.h) ----------------------------------------------------
  bpf_prog_attach: {
    parameters: [
      "i32", // int prog_fd
      "i32", // int attachable_fd
      "u32", // enum bpf_attach_type type
      "u32", // unsigned int flags
    ],
    result: "i32", // 0 or -errno
  },
  bpf_prog_detach2: {
    parameters: [
      "i32", // int prog_fd
      "i32", // int attachable_fd
      "u32", // enum bpf_attach_type type
    ],
    result: "i32", // 0 or -errno
  },
  bpf_prog_query: {
    parameters: [
      "i32", // int target_fd
      "u32", // enum bpf_attach_type type
      "u32", // __u32 query_flags
      "buffer", // __u32 *attach_flags (out)
      "buffer", // __u32 *prog_ids (out, *prog_cnt entries)
      "buffer", // __u32 *prog_cnt (in: capacity, out: count)
    ],
    result: "i32", // 0 or -errno (ENOSPC when prog_ids is too small)
  },
  bpf_obj_get: {
    parameters: [
      "buffer", // const char *pathname
    ],
    result: "i32", // fd or -errno
  },
  bpf_obj_pin: {
    parameters: [
      "i32", // int fd
      "buffer", // const char *pathname
    ],
    result: "i32", // 0 or -errno
  },
  bpf_obj_get_info_by_fd: {
    parameters: [
      "i32", // int bpf_fd
      "buffer", // void *info (struct bpf_{prog,map,link}_info)
      "buffer", // __u32 *info_len (in: buffer size, out: bytes filled)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_prog_get_fd_by_id: {
    parameters: [
      "u32", // __u32 id
    ],
    result: "i32", // fd or -errno
  },
  bpf_map_get_fd_by_id: {
    parameters: [
      "u32", // __u32 id
    ],
    result: "i32", // fd or -errno
  },
  bpf_map_lookup_elem: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key
      "buffer", // void *value (out)
    ],
    result: "i32", // 0 or -errno (ENOENT: no such key)
  },
  bpf_map_update_elem: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key
      "buffer", // const void *value
      "u64", // __u64 flags (BPF_ANY / BPF_NOEXIST / BPF_EXIST)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_map_delete_elem: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key
    ],
    result: "i32", // 0 or -errno (ENOENT: no such key)
  },
  bpf_map_get_next_key: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key (NULL: first key)
      "buffer", // void *next_key (out)
    ],
    result: "i32", // 0 or -errno (ENOENT: past the last key)
  },

  // ---- XDP over netlink ----------------------------------------------------------------------
  bpf_xdp_attach: {
    parameters: [
      "i32", // int ifindex
      "i32", // int prog_fd
      "u32", // __u32 flags (XDP_FLAGS_*)
      "buffer", // const struct bpf_xdp_attach_opts *opts (may be NULL)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_xdp_detach: {
    parameters: [
      "i32", // int ifindex
      "u32", // __u32 flags (XDP_FLAGS_*)
      "buffer", // const struct bpf_xdp_attach_opts *opts (may be NULL)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_xdp_query: {
    parameters: [
      "i32", // int ifindex
      "i32", // int flags (XDP_FLAGS_*)
      "buffer", // struct bpf_xdp_query_opts *opts (out)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_xdp_query_id: {
    parameters: [
      "i32", // int ifindex
      "i32", // int flags (XDP_FLAGS_*)
      "buffer", // __u32 *prog_id (out, 0 when nothing is attached)
    ],
    result: "i32", // 0 or -errno
  },

  // ---- TC (clsact + direct-action cls_bpf) ---------------------------------------------------
  bpf_tc_hook_create: {
    parameters: [
      "buffer", // struct bpf_tc_hook *hook
    ],
    result: "i32", // 0 or -errno (EEXIST: the clsact qdisc is already there)
  },
  bpf_tc_hook_destroy: {
    parameters: [
      "buffer", // struct bpf_tc_hook *hook
    ],
    result: "i32", // 0 or -errno
  },
  bpf_tc_attach: {
    parameters: [
      "buffer", // const struct bpf_tc_hook *hook
      "buffer", // struct bpf_tc_opts *opts (in/out: handle, priority, prog_id)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_tc_detach: {
    parameters: [
      "buffer", // const struct bpf_tc_hook *hook
      "buffer", // const struct bpf_tc_opts *opts (handle + priority; prog fields zero)
    ],
    result: "i32", // 0 or -errno
  },
  bpf_tc_query: {
    parameters: [
      "buffer", // const struct bpf_tc_hook *hook
      "buffer", // struct bpf_tc_opts *opts (in: handle + priority, out: prog_id)
    ],
    result: "i32", // 0 or -errno (ENOENT: no such filter)
  },

  // ---- ring buffers --------------------------------------------------------------------------
  ring_buffer__new: {
    parameters: [
      "i32", // int map_fd (a BPF_MAP_TYPE_RINGBUF)
      "function", // ring_buffer_sample_fn sample_cb: int (*)(void *ctx, void *data, size_t size)
      "pointer", // void *ctx
      "pointer", // const struct ring_buffer_opts *opts (NULL: defaults)
    ],
    result: "pointer", // struct ring_buffer *, NULL + errno on failure
  },
  ring_buffer__poll: {
    parameters: [
      "pointer", // struct ring_buffer *rb
      "i32", // int timeout_ms
    ],
    result: "i32", // records consumed, or -errno
  },
  ring_buffer__free: {
    parameters: [
      "pointer", // struct ring_buffer *rb
    ],
    result: "void",
  },

  // ---- BTF -----------------------------------------------------------------------------------
  btf__parse: {
    parameters: [
      "buffer", // const char *path (an ELF object's .BTF section, or raw BTF)
      "pointer", // struct btf_ext **btf_ext (NULL: not wanted)
    ],
    result: "pointer", // struct btf *, NULL + errno on failure
  },
  btf__type_cnt: {
    parameters: [
      "pointer", // const struct btf *btf
    ],
    result: "u32", // number of type ids, counting the void type 0
  },
  btf__type_by_id: {
    parameters: [
      "pointer", // const struct btf *btf
      "u32", // __u32 id
    ],
    result: "pointer", // const struct btf_type *, NULL + errno EINVAL past the last id
  },
  btf__name_by_offset: {
    parameters: [
      "pointer", // const struct btf *btf
      "u32", // __u32 offset (a name_off of a type, member or enumerator)
    ],
    result: "pointer", // const char *, NULL if out of range
  },
  btf__free: {
    parameters: [
      "pointer", // struct btf *btf
    ],
    result: "void",
  },

  // ---- library-wide --------------------------------------------------------------------------
  libbpf_num_possible_cpus: {
    parameters: [],
    result: "i32", // CPU count or -errno
  },
  libbpf_strerror: {
    parameters: [
      "i32", // int err (either sign)
      "buffer", // char *buf (out)
      "usize", // size_t size
    ],
    result: "i32", // 0 or -errno
  },
  libbpf_set_print: {
    parameters: [
      "function", // libbpf_print_fn_t fn: int (*)(enum libbpf_print_level, const char *, va_list)
    ],
    result: "function", // the previous libbpf_print_fn_t
  },
} as const satisfies Deno.ForeignLibraryInterface;

export type LibbpfSymbols = Deno.DynamicLibrary<typeof LIBBPF_SYMBOLS>["symbols"];

/** struct bpf_tc_hook / bpf_tc_opts / bpf_xdp_*_opts as libbpf 1.1.2 lays them out on 64-bit. */
export const LIBBPF_STRUCTS = {
  tcHook: { size: 24, ifindex: 8, attachPoint: 12, parent: 16 },
  tcOpts: { size: 32, progFd: 8, flags: 12, progId: 16, handle: 20, priority: 24 },
  xdpAttachOpts: { size: 16, oldProgFd: 8 },
  xdpQueryOpts: { size: 32, progId: 8, drvProgId: 12, hwProgId: 16, skbProgId: 20, attachMode: 24 },
} as const;

/** enum libbpf_print_level */
export const LibbpfPrintLevel = { WARN: 0, INFO: 1, DEBUG: 2 } as const;
