#!/usr/bin/env bash
# Installs what the project needs on a Debian 12 machine that has only node/npm, as root.
# Idempotent: every step checks first, so a second run takes well under a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENO_VERSION="2.9.6"
TOOLS="$ROOT/.tools"
DENO_BIN="$TOOLS/node_modules/@deno/linux-x64-glibc/deno"

APT_PACKAGES=(clang-19 llvm-19 libbpf-dev libbpf1 bpftool iproute2 iptables ethtool
  containernetworking-plugins iperf3 socat python3 procps util-linux kmod openssl libc6-dev
  openjdk-17-jdk-headless curl)

say() { echo "setup: $*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    say "missing Debian packages (${missing[*]}) and not root: run this as root"
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [[ ! -x "$DENO_BIN" ]] || [[ "$("$DENO_BIN" --version 2>/dev/null | head -1)" != "deno $DENO_VERSION "* ]]; then
  say "installing deno $DENO_VERSION from the npm registry into .tools/"
  mkdir -p "$TOOLS"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "deno@$DENO_VERSION" >&2
fi
mkdir -p "$TOOLS/bin"
ln -sf "$DENO_BIN" "$TOOLS/bin/deno"

# bpffs is where pins live; a fresh VM may not have it mounted.
if [[ $(id -u) -eq 0 ]] && ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
  say "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
