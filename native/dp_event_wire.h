/*
 * dp_event_wire.h: conn event records (struct dp_conn_info) to the protobuf
 * bytes of retrace.v1.WatchConnEventsResponse, each behind the tag and length
 * that make it one element of WatchConnEventBatchesResponse.messages.
 *
 * Why native: the conn-event stream is the one place where the control plane
 * handles hundreds of thousands of messages a second. Encoding a drained batch
 * here costs a few tens of ns per event and builds no JS object at all; the
 * same work in JS was a third of the Node thread under a burst.
 *
 * The output must be byte-identical to ts-proto's encoder over the decoded
 * ConnView (test/unit/event-encode.test.ts holds it to that): same fields in
 * field-number order, proto3 defaults (0) left out, strings always written,
 * millisecond Timestamps (ts-proto's Date fields), Durations to the ns.
 *
 * Nothing here restates the API's enums: the control plane hands the record
 * code -> proto value tables in once (struct dp_ev_wire_ctx), built from its
 * own mappings, together with the port names by port index. Pure code: no
 * EAL, no allocation, safe to call from any thread.
 */
#ifndef RETRACE_DP_EVENT_WIRE_H
#define RETRACE_DP_EVENT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "dp_events.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_EV_WIRE_PORTS    255 /* port indexes 0..254; 0xff = no side record */
#define DP_EV_WIRE_NAME_MAX 255

struct dp_ev_wire_ctx {
	/* Record code -> proto enum value (0 = the proto default, left out). */
	uint32_t event_type[256];
	uint32_t state[256];
	uint32_t protocol[256];
	uint32_t side_client, side_server; /* ConnEvent.changed_side by record changed_side 0 / 1 */
	uint8_t code_closed, code_path;	   /* event type codes with a duration / a changed side */
	uint8_t code_icmp;		   /* protocol code whose conns carry no ports but the echo id */
	uint8_t flag_local;		   /* conn flag: a local echo (no local address, no real) */
	/* Port names (UTF-8) by port index. */
	uint8_t name_len[DP_EV_WIRE_PORTS];
	char name[DP_EV_WIRE_PORTS][DP_EV_WIRE_NAME_MAX];
	uint8_t longest; /* max name_len: room per event */
};

/* Most bytes n events can take (the buffer dp_ev_wire_encode needs). */
size_t dp_ev_wire_bound(const struct dp_ev_wire_ctx *x, unsigned n);

/* Encodes recs[0..n) (records may be unaligned in memory) numbered first_seq,
 * first_seq + 1, ... into out, back to back: event i's message is
 * out[starts[i] .. ends[i]), and out[ends[i - 1] (0 for i = 0) .. ends[i])
 * is the same message as a batch element. Returns the bytes written. */
size_t dp_ev_wire_encode(const struct dp_ev_wire_ctx *x, const void *recs, unsigned n, uint64_t first_seq,
	uint8_t *out, uint32_t *starts, uint32_t *ends);

#ifdef __cplusplus
}
#endif
#endif
