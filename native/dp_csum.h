/*
 * dp_csum.h: incremental Internet checksum updates (RFC 1624, eqn. 3:
 * HC' = ~(~HC + ~m + m')). Words are taken as they lie in memory, so the
 * result is right in either byte order as long as old and new agree.
 */
#ifndef RETRACE_DP_CSUM_H
#define RETRACE_DP_CSUM_H

#include <stdint.h>
#include <string.h>

static inline uint32_t
dp_csum_acc16(uint32_t acc, uint16_t old, uint16_t new_)
{
	return acc + (uint16_t)~old + new_;
}

static inline uint32_t
dp_csum_acc32(uint32_t acc, uint32_t old, uint32_t new_)
{
	acc = dp_csum_acc16(acc, (uint16_t)(old & 0xffff), (uint16_t)(new_ & 0xffff));
	return dp_csum_acc16(acc, (uint16_t)(old >> 16), (uint16_t)(new_ >> 16));
}

/* Apply the accumulated difference to checksum field value csum. */
static inline uint16_t
dp_csum_apply(uint16_t csum, uint32_t acc)
{
	uint32_t sum = (uint16_t)~csum + acc;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* One's complement addition of 64-bit words: the carry out goes back in at
 * the bottom (an add and an adc). 2^64 - 1 is a multiple of 2^16 - 1, so a
 * sum of 64-bit words folds to the sum of their 16-bit words. */
static inline uint64_t
dp_csum_add64(uint64_t s, uint64_t v)
{
	s += v;
	return s + (s < v);
}

/*
 * The 16-bit one's complement sum of len bytes (not complemented), equal to
 * rte_raw_cksum's: 0xffff over a message whose checksum verifies. 64 bits
 * per step with the carry folded in as it goes; rte_raw_cksum adds 16 bits
 * per step, four times the additions, in a loop it does not unroll. Every
 * piece starts at an even offset, so the words keep their places (and an
 * odd last byte is the first of a zero-padded word, as in rte_raw_cksum).
 */
static inline uint16_t
dp_csum_sum(const void *buf, uint32_t len)
{
	const uint8_t *p = (const uint8_t *)buf;
	uint64_t s = 0, v;

	for (; len >= 16; p += 16, len -= 16) {
		uint64_t v2;
		memcpy(&v, p, 8);
		memcpy(&v2, p + 8, 8);
		s = dp_csum_add64(dp_csum_add64(s, v), v2);
	}
	if (len & 8) {
		memcpy(&v, p, 8);
		s = dp_csum_add64(s, v);
		p += 8;
	}
	if (len & 4) {
		uint32_t v4;
		memcpy(&v4, p, 4);
		s = dp_csum_add64(s, v4);
		p += 4;
	}
	if (len & 2) {
		uint16_t v2;
		memcpy(&v2, p, 2);
		s = dp_csum_add64(s, v2);
		p += 2;
	}
	if (len & 1) {
		uint16_t v1 = 0;
		memcpy(&v1, p, 1);
		s = dp_csum_add64(s, v1);
	}
	uint32_t s32 = (uint32_t)s + (uint32_t)(s >> 32);
	s32 += s32 < (uint32_t)(s >> 32);
	uint16_t s16 = (uint16_t)(s32 + (s32 >> 16));
	s16 += s16 < (uint16_t)(s32 >> 16);
	return s16;
}

#endif
