/*
 * dp_siphash.h: SipHash-2-4 (Aumasson and Bernstein), a keyed PRF, for the
 * SYN cookies of dp_synproxy.c.
 *
 * Why not a DPDK hash: rte_hash_crc, rte_jhash and rte_softrss (Toeplitz)
 * are linear or unkeyed in any cryptographic sense; from a few cookies an
 * attacker could solve for the key or forge a cookie for another tuple.
 * A cookie must be a MAC, and SipHash is the small one Linux uses for the
 * same purpose.
 */
#ifndef RETRACE_DP_SIPHASH_H
#define RETRACE_DP_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct dp_siphash_key {
	uint64_t k0, k1;
};

/* SipHash-2-4 of len bytes at p (any alignment), as the reference
 * implementation defines it (little-endian words). */
uint64_t dp_siphash(const struct dp_siphash_key *key, const void *p, size_t len);

#endif
