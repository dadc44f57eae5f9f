// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * An iterator over the kernel's BPF maps that prints each map's id and element count, as the kernel
 * itself counts them (Linux 6.6+). Reading it costs the same whether our tables are empty or full,
 * where walking their keys would cost one system call per entry. GPL-only kfunc, hence the license.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern s64 bpf_map_sum_elem_count(const struct bpf_map *map) __ksym;

SEC("iter/bpf_map")
int mb_map_stats(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;
	if (!map)
		return 0;
	BPF_SEQ_PRINTF(ctx->meta->seq, "%u %lld\n", map->id, bpf_map_sum_elem_count(map));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
