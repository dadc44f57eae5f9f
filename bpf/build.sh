#!/usr/bin/env bash
# Builds CO-RE BPF objects: bpf/*.bpf.c -> bpf/build/*.bpf.o (and tests/bpf/*.bpf.c for test fixtures).
# vmlinux.h is generated from the running kernel's BTF at build time rather than committed: it is
# ~3 MB of generated text, and CO-RE relocations make the objects portable to other kernels anyway.
# Rebuilds only what changed (make-like timestamp checks), warnings are errors. Then regenerates
# src/generated/bpf_types.ts from the objects' BTF (`deno task gen`); with --check it only verifies the
# file is current and fails otherwise, as CI does, so a header change cannot land without it.
set -euo pipefail
gen_args=()
case "${1:-}" in
  "") ;;
  --check) gen_args=(--check) ;;
  *) echo "usage: bpf/build.sh [--check]" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bpf/build"
CLANG="${CLANG:-clang-19}"
# The kernel headers' name for this machine's architecture, which CO-RE's PT_REGS macros need.
case "$(uname -m)" in
  x86_64) ARCH=x86 ;;
  aarch64) ARCH=arm64 ;;
  *) echo "bpf: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
mkdir -p "$OUT"

VMLINUX="$OUT/vmlinux.h"
if [[ ! -s "$VMLINUX" ]]; then
  tmp="$(mktemp "$OUT/vmlinux.XXXXXX")"
  bpftool btf dump file /sys/kernel/btf/vmlinux format c >"$tmp"
  mv "$tmp" "$VMLINUX"
fi

build() { # src out
  local src="$1" out="$2"
  local newest="$src"
  for h in "$ROOT"/bpf/*.h "$VMLINUX" "$ROOT/bpf/build.sh"; do
    [[ "$h" -nt "$newest" ]] && newest="$h"
  done
  if [[ -f "$out" && "$out" -nt "$newest" ]]; then return 0; fi
  echo "bpf: building $(basename "$src")" >&2
  "$CLANG" -target bpf -O2 -g -Wall -Werror -Wno-unused-function \
    -D__TARGET_ARCH_${ARCH} -I"$OUT" -I"$ROOT/bpf" -c "$src" -o "$out.tmp"
  mv "$out.tmp" "$out"
}

shopt -s nullglob
for src in "$ROOT"/bpf/*.bpf.c; do
  build "$src" "$OUT/$(basename "${src%.c}").o"
done
mkdir -p "$OUT/test"
for src in "$ROOT"/tests/bpf/*.bpf.c; do
  build "$src" "$OUT/test/$(basename "${src%.c}").o"
done

# The generator reads BTF through libbpf (FFI), with no privileges.
DENO="${DENO:-$(command -v deno || echo "$ROOT/.tools/bin/deno")}"
(cd "$ROOT" && "$DENO" task -q gen "${gen_args[@]}")
