/*
 * dp_counters.c: counter names (generated from the lists in dp_counters.h)
 * and the summing reader.
 */
#include <string.h>

#include "dp_internal.h"

const char *const dp_proto_names[DP_PROTO_MAX] = {
#define X(n) #n,
	DP_PROTO_LIST(X)
#undef X
};

const char *const dp_path_counter_names[DP_PATH_MAX] = {
#define X(n, d) #n,
	DP_PATH_COUNTER_LIST(X)
#undef X
};

const char *const dp_path_counter_help[DP_PATH_MAX] = {
#define X(n, d) d,
	DP_PATH_COUNTER_LIST(X)
#undef X
};

const char *const dp_drop_names[DP_DROP_MAX] = {
#define X(n, d) #n,
	DP_DROP_LIST(X)
#undef X
};

const char *const dp_drop_help[DP_DROP_MAX] = {
#define X(n, d) d,
	DP_DROP_LIST(X)
#undef X
};

const char *const dp_conn_counter_names[DP_CONN_CTR_MAX] = {
#define X(n, d) #n,
	DP_CONN_COUNTER_LIST(X)
#undef X
};

const char *const dp_conn_counter_help[DP_CONN_CTR_MAX] = {
#define X(n, d) d,
	DP_CONN_COUNTER_LIST(X)
#undef X
};

const char *const dp_real_counter_names[DP_REAL_MAX] = {
#define X(n) #n,
	DP_REAL_COUNTER_LIST(X)
#undef X
};

const char *const dp_svc_drop_names[DP_SVC_DROP_MAX] = {
#define X(n) #n,
	DP_SVC_DROP_LIST(X)
#undef X
};

const char *const dp_svc_syn_names[DP_SVC_SYN_MAX] = {
#define X(n) #n,
	DP_SVC_SYN_LIST(X)
#undef X
};

void
dp_counters_read(uint64_t *out)
{
	memset(out, 0, sizeof(uint64_t) * DP_COUNTERS_LEN);
	if (dp.blocks == NULL)
		return;
	for (unsigned b = 0; b <= dp.nb_workers; b++) {
		const struct dp_counter_block *blk = &dp.blocks[b];
		const uint64_t *path = &blk->path[0][0][0];
		const uint64_t *drop = &blk->drop[0][0];

		for (size_t i = 0; i < DP_COUNTERS_PATH_LEN; i++)
			out[i] += path[i];
		for (size_t i = 0; i < DP_COUNTERS_DROP_LEN; i++)
			out[DP_COUNTERS_PATH_LEN + i] += drop[i];
		for (size_t i = 0; i < DP_COUNTERS_CONN_LEN; i++)
			out[DP_COUNTERS_PATH_LEN + DP_COUNTERS_DROP_LEN + i] += blk->conn[i];
	}
}
