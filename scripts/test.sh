#!/usr/bin/env bash
# The project's test command: static checks, BPF build, unit tests, kernel tests.
# Usage: scripts/test.sh [all|unit|kernel] [extra deno test args...]
# Prints a closing line "N passed, N failed" summed over every stage.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh || exit 1
export PATH="$ROOT/.tools/bin:$PATH"
export NO_COLOR=1

what="${1:-all}"
shift || true
passed=0
failed=0
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT

stage() { # name, command...
  local name="$1"
  shift
  echo "== $name" >&2
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "!! stage failed: $name" >&2
    failed=$((failed + 1))
  fi
}

denotest() { # name, deno test args...
  local name="$1"
  shift
  echo "== $name" >&2
  deno test --allow-all "$@" 2>&1 | tee "$log/$name.out"
  local rc=${PIPESTATUS[0]}
  local line
  line="$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log/$name.out" | tail -1)"
  if [[ -z "$line" ]]; then
    echo "!! $name: deno test printed no summary (exit $rc)" >&2
    failed=$((failed + 1))
    return
  fi
  local p f
  p="$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$line")"
  f="$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$line")"
  passed=$((passed + p))
  failed=$((failed + f))
  if [[ $rc -ne 0 && $f -eq 0 ]]; then failed=$((failed + 1)); fi
}

# What the kernel tests could leave behind: namespaces, our programs, pins, cgroups, host iptables
# rules, temp dirs. Compared before and after the kernel suite.
node_state() {
  ip netns list | sort
  bpftool prog list 2>/dev/null | grep -c ' name mb_' || true
  ls /sys/fs/bpf | sort
  ls "$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)" | sort
  iptables-save 2>/dev/null | grep -v '^#' | sort | md5sum
  ls -d /tmp/merbridge-* 2>/dev/null | sort
}

same_state() {
  local after
  # Programs and temp dirs are released asynchronously after their last user exits.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    after="$(node_state)"
    [[ "$after" == "$1" ]] && return 0
    sleep 0.5
  done
  echo "!! node state differs after the kernel tests:" >&2
  diff <(echo "$1") <(echo "$after") >&2
  return 1
}

if [[ "$what" == all ]]; then
  stage "deno fmt --check" deno fmt --check
  stage "deno lint" deno lint
  # shellcheck disable=SC2046 # the directory list is meant to split into words
  stage "deno check" deno check main.ts mod.ts testbed/ tests/ $(ls -d bench/ demo/ 2>/dev/null)
fi
# --check: the committed src/generated/bpf_types.ts must already match the objects it is generated from.
stage "bpf build" bash bpf/build.sh --check
case "$what" in
  all | unit) denotest unit tests/unit/ "$@" ;;
esac
case "$what" in
  all | kernel)
    if [[ $(id -u) -ne 0 ]]; then
      echo "!! kernel tests need root" >&2
      failed=$((failed + 1))
    else
      before="$(node_state)"
      denotest kernel tests/kernel/ "$@"
      stage "kernel tests left the node as they found it" same_state "$before"
    fi
    ;;
esac

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
