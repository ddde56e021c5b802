/*
 * dp_event_wire.c: conn events to protobuf bytes (see dp_event_wire.h).
 *
 * The messages (proto/retrace/v1/conn.proto), with the field numbers the
 * tags below encode as (number << 3) | wire type:
 *
 *   element 1 (of WatchConnEventBatchesResponse) {
 *     WatchConnEventsResponse: seq 1, time 2 (Timestamp), event 3 {
 *       ConnEvent: type 1, conn 2 {
 *         Conn: protocol 1, state 2, local 3, client 4, client_port 5, vip 6,
 *           vip_port 7, local_address 8, local_port 9, real 10, real_port 11,
 *           client_side 12, server_side 13 { port 1, peer_mac 2, packets 3,
 *           bytes 4 }, worker 14, created_at 15, last_packet_at 16 },
 *       changed_side 3, duration 4 (Duration) } } }
 *
 * Timestamp and Duration are both { seconds 1, nanos 2 }.
 */
#include <string.h>

#include "dp_event_wire.h"

/* Wire tags. */
enum {
	T_ELEMENT = 0x0a,
	T_RESP_SEQ = 0x08,
	T_RESP_TIME = 0x12,
	T_RESP_EVENT = 0x1a,
	T_EV_TYPE = 0x08,
	T_EV_CONN = 0x12,
	T_EV_CHANGED_SIDE = 0x18,
	T_EV_DURATION = 0x22,
	T_C_PROTOCOL = 0x08,
	T_C_STATE = 0x10,
	T_C_LOCAL = 0x18,
	T_C_CLIENT = 0x22,
	T_C_CLIENT_PORT = 0x28,
	T_C_VIP = 0x32,
	T_C_VIP_PORT = 0x38,
	T_C_LOCAL_ADDRESS = 0x42,
	T_C_LOCAL_PORT = 0x48,
	T_C_REAL = 0x52,
	T_C_REAL_PORT = 0x58,
	T_C_CLIENT_SIDE = 0x62,
	T_C_SERVER_SIDE = 0x6a,
	T_C_WORKER = 0x70,
	T_C_CREATED_AT = 0x7a,
	T_C_LAST_PACKET_AT = 0x82, /* field 16: a two-byte tag, 0x82 0x01 */
	T_S_PORT = 0x0a,
	T_S_PEER_MAC = 0x12,
	T_S_PACKETS = 0x18,
	T_S_BYTES = 0x20,
	T_SECONDS = 0x08,
	T_NANOS = 0x10,
};

/* Largest event without its two port names (the sum of every field at its
 * widest: 10-byte varints, 15-character addresses, 2-byte lengths). */
#define MAX_EVENT 400

size_t
dp_ev_wire_bound(const struct dp_ev_wire_ctx *x, unsigned n)
{
	return (size_t)n * (MAX_EVENT + 2u * x->longest);
}

static inline uint8_t *
varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* A varint field, left out when 0 (proto3's default). */
static inline uint8_t *
uint_field(uint8_t *p, uint8_t tag, uint64_t v)
{
	if (v == 0)
		return p;
	*p++ = tag;
	return varint(p, v);
}

/* A length-delimited field is begun with one byte reserved for its length;
 * end() writes it, moving the body when the length needs more (bodies here
 * stay far below 16 KiB, two bytes). */
static inline uint8_t *
begin(uint8_t *p, uint8_t tag, uint8_t **len_at)
{
	*p++ = tag;
	*len_at = p;
	return p + 1;
}

static inline uint8_t *
end(uint8_t *p, uint8_t *len_at)
{
	size_t len = (size_t)(p - len_at - 1);

	if (len < 0x80) {
		*len_at = (uint8_t)len;
		return p;
	}
	memmove(len_at + 2, len_at + 1, len);
	len_at[0] = (uint8_t)(len | 0x80);
	len_at[1] = (uint8_t)(len >> 7);
	return p + 1;
}

static const char DIGITS[] = "0123456789abcdef";

/* A dotted quad from 4 bytes in network order. */
static inline uint8_t *
ipv4(uint8_t *p, uint8_t tag, uint32_t addr_be)
{
	const uint8_t *a = (const uint8_t *)&addr_be;
	uint8_t *len_at;

	p = begin(p, tag, &len_at);
	for (int i = 0; i < 4; i++) {
		unsigned d = a[i];
		if (i > 0)
			*p++ = '.';
		if (d >= 100)
			*p++ = (uint8_t)DIGITS[d / 100];
		if (d >= 10)
			*p++ = (uint8_t)DIGITS[d / 10 % 10];
		*p++ = (uint8_t)DIGITS[d % 10];
	}
	*len_at = (uint8_t)(p - len_at - 1);
	return p;
}

/* aa:bb:cc:dd:ee:ff. */
static inline uint8_t *
mac(uint8_t *p, uint8_t tag, const uint8_t *m)
{
	*p++ = tag;
	*p++ = 17;
	for (int i = 0; i < 6; i++) {
		if (i > 0)
			*p++ = ':';
		*p++ = (uint8_t)DIGITS[m[i] >> 4];
		*p++ = (uint8_t)DIGITS[m[i] & 15];
	}
	return p;
}

/* { seconds, nanos } behind the tag (written even when both are 0, as
 * ts-proto writes a present message field). */
static inline uint8_t *
seconds_nanos(uint8_t *p, const uint8_t *tag, size_t tag_len, uint64_t seconds, uint32_t nanos)
{
	uint8_t *len_at;

	memcpy(p, tag, tag_len);
	p += tag_len;
	len_at = p++;
	p = uint_field(p, T_SECONDS, seconds);
	p = uint_field(p, T_NANOS, nanos);
	*len_at = (uint8_t)(p - len_at - 1);
	return p;
}

/* A Timestamp with millisecond precision, like ts-proto's Date fields. */
static inline uint8_t *
timestamp_ms(uint8_t *p, const uint8_t *tag, size_t tag_len, uint64_t ns)
{
	uint64_t ms = ns / 1000000u;

	return seconds_nanos(p, tag, tag_len, ms / 1000u, (uint32_t)(ms % 1000u) * 1000000u);
}

static const uint8_t TAG_TIME[] = { T_RESP_TIME };
static const uint8_t TAG_CREATED[] = { T_C_CREATED_AT };
static const uint8_t TAG_LAST[] = { T_C_LAST_PACKET_AT, 0x01 };
static const uint8_t TAG_DURATION[] = { T_EV_DURATION };

static inline uint16_t
port_host(uint16_t be)
{
	return (uint16_t)((be >> 8) | (be << 8));
}

static uint8_t *
side(uint8_t *p, const struct dp_ev_wire_ctx *x, const struct dp_conn_info *e, uint8_t tag, int s)
{
	uint8_t *len_at;
	uint8_t pidx = e->side_pidx[s];

	p = begin(p, tag, &len_at);
	if (pidx != 0xff) {
		uint8_t n = x->name_len[pidx];
		if (n > 0) {
			*p++ = T_S_PORT;
			p = varint(p, n);
			memcpy(p, x->name[pidx], n);
			p += n;
		}
		p = mac(p, T_S_PEER_MAC, e->peer_mac[s]);
	}
	p = uint_field(p, T_S_PACKETS, e->pkts[s]);
	p = uint_field(p, T_S_BYTES, e->bytes[s]);
	return end(p, len_at);
}

static uint8_t *
conn(uint8_t *p, const struct dp_ev_wire_ctx *x, const struct dp_conn_info *e)
{
	int icmp = e->proto == x->code_icmp;
	int local = (e->flags & x->flag_local) != 0;
	uint8_t *len_at;

	p = begin(p, T_EV_CONN, &len_at);
	p = uint_field(p, T_C_PROTOCOL, x->protocol[e->proto]);
	p = uint_field(p, T_C_STATE, x->state[e->state]);
	p = uint_field(p, T_C_LOCAL, local);
	p = ipv4(p, T_C_CLIENT, e->caddr);
	p = uint_field(p, T_C_CLIENT_PORT, port_host(e->cport));
	p = ipv4(p, T_C_VIP, e->vaddr);
	p = uint_field(p, T_C_VIP_PORT, icmp ? 0 : port_host(e->vport));
	if (!local) {
		/* A local echo has neither: the view leaves them empty/0, which ts-proto omits. */
		p = ipv4(p, T_C_LOCAL_ADDRESS, e->laddr);
		p = uint_field(p, T_C_LOCAL_PORT, port_host(e->lport));
		p = ipv4(p, T_C_REAL, e->raddr);
	}
	p = uint_field(p, T_C_REAL_PORT, icmp ? 0 : port_host(e->rport));
	p = side(p, x, e, T_C_CLIENT_SIDE, 0);
	p = side(p, x, e, T_C_SERVER_SIDE, 1);
	p = uint_field(p, T_C_WORKER, e->worker);
	p = timestamp_ms(p, TAG_CREATED, sizeof(TAG_CREATED), e->created_ns);
	p = timestamp_ms(p, TAG_LAST, sizeof(TAG_LAST), e->last_ns);
	return end(p, len_at);
}

size_t
dp_ev_wire_encode(const struct dp_ev_wire_ctx *x, const void *recs, unsigned n, uint64_t first_seq,
	uint8_t *out, uint32_t *starts, uint32_t *ends)
{
	const uint8_t *r = recs;
	uint8_t *p = out;

	for (unsigned i = 0; i < n; i++) {
		struct dp_conn_info e;
		uint8_t *element, *ev;

		/* Drained buffers handed back from JS need not be aligned. */
		memcpy(&e, r + (size_t)i * sizeof(e), sizeof(e));
		p = begin(p, T_ELEMENT, &element);
		p = uint_field(p, T_RESP_SEQ, first_seq + i);
		p = timestamp_ms(p, TAG_TIME, sizeof(TAG_TIME), e.time_ns);
		p = begin(p, T_RESP_EVENT, &ev);
		p = uint_field(p, T_EV_TYPE, x->event_type[e.type]);
		p = conn(p, x, &e);
		if (e.type == x->code_path)
			p = uint_field(
				p, T_EV_CHANGED_SIDE, e.changed_side == 0 ? x->side_client : x->side_server);
		if (e.type == x->code_closed) {
			/* Time since creation, 0 when the clocks disagree (never negative). */
			uint64_t d = e.time_ns > e.created_ns ? e.time_ns - e.created_ns : 0;
			p = seconds_nanos(p, TAG_DURATION, sizeof(TAG_DURATION), d / 1000000000u,
				(uint32_t)(d % 1000000000u));
		}
		p = end(p, ev);
		size_t len = (size_t)(p - element - 1);
		p = end(p, element);
		ends[i] = (uint32_t)(p - out);
		starts[i] = (uint32_t)(p - out - len);
	}
	return (size_t)(p - out);
}
