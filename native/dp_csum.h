/*
 * dp_csum.h: incremental Internet checksum updates (RFC 1624, eqn. 3:
 * HC' = ~(~HC + ~m + m')). Words are taken as they lie in memory, so the
 * result is right in either byte order as long as old and new agree.
 */
#ifndef RETRACE_DP_CSUM_H
#define RETRACE_DP_CSUM_H

#include <stdint.h>

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

#endif
