/*
 * dp_siphash.c: SipHash-2-4, written from the paper's description
 * ("SipHash: a fast short-input PRF", 2012); checked against its test
 * vector by test/native/fixtures (the driver's "siphash-vector" command).
 */
#include <string.h>

#include "dp_siphash.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                          \
	do {                                                              \
		v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32); \
		v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                    \
		v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                    \
		v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32); \
	} while (0)

static inline uint64_t
load_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

uint64_t
dp_siphash(const struct dp_siphash_key *key, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t v0 = 0x736f6d6570736575ull ^ key->k0;
	uint64_t v1 = 0x646f72616e646f6dull ^ key->k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ key->k0;
	uint64_t v3 = 0x7465646279746573ull ^ key->k1;
	size_t whole = len & ~(size_t)7;

	for (size_t i = 0; i < whole; i += 8) {
		uint64_t m = load_le64(p + i);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	/* Last block: the remaining bytes, the length in the top byte. */
	uint8_t last[8] = { 0 };
	memcpy(last, p + whole, len - whole);
	last[7] = (uint8_t)len;
	uint64_t b = load_le64(last);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}
