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

/*
 * The 16-bit one's complement sum of len bytes (not complemented), equal to
 * rte_raw_cksum's: 0xffff over a message whose checksum verifies. Taken 32
 * bits at a time into a 64-bit sum that cannot overflow below 2^34 bytes,
 * folded once at the end; 2^16 = 1 (mod 0xffff), so a 32-bit word adds the
 * same as its two 16-bit halves. rte_raw_cksum adds 16 bits per step, which
 * for a 64-byte ping is four times the additions and a loop it does not unroll.
 */
static inline uint16_t
dp_csum_sum(const void *buf, uint32_t len)
{
	const uint8_t *p = (const uint8_t *)buf;
	uint64_t s = 0;

	for (; len >= 16; p += 16, len -= 16) {
		uint32_t v[4];
		memcpy(v, p, 16);
		s += (uint64_t)v[0] + v[1] + v[2] + v[3];
	}
	if (len & 8) {
		uint32_t v[2];
		memcpy(v, p, 8);
		s += (uint64_t)v[0] + v[1];
		p += 8;
	}
	if (len & 4) {
		uint32_t v;
		memcpy(&v, p, 4);
		s += v;
		p += 4;
	}
	if (len & 2) {
		uint16_t v;
		memcpy(&v, p, 2);
		s += v;
		p += 2;
	}
	if (len & 1) {
		uint16_t v = 0; /* the odd byte is the first of a zero-padded word */
		memcpy(&v, p, 1);
		s += v;
	}
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

#endif
