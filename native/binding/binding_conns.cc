// binding_conns.cc: conn events and snapshots (dp_events.h). Conn records
// cross as Buffers of struct dp_conn_info, decoded in TS with the offsets
// connInfoLayout() reports. Dumps, deletes and lookups wait on the workers'
// mailboxes, so they run off the JS thread (binding_promise.h). Rules:
// binding.h.
#include <napi.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "binding.h"
#include "binding_promise.h"
#include "dp.h"
#include "dp_event_wire.h"
#include "dp_events.h"

namespace retrace_js {
namespace {

// connInfoLayout(): byte offsets of struct dp_conn_info, so TS decodes the
// buffers below without guessing the C layout.
Napi::Value ConnInfoLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#define OFF(f) o.Set(#f, static_cast<uint32_t>(offsetof(struct dp_conn_info, f)))
  OFF(time_ns);
  OFF(created_ns);
  OFF(last_ns);
  OFF(pkts);
  OFF(bytes);
  OFF(caddr);
  OFF(vaddr);
  OFF(laddr);
  OFF(raddr);
  OFF(cport);
  OFF(vport);
  OFF(lport);
  OFF(rport);
  OFF(type);
  OFF(proto);
  OFF(state);
  OFF(flags);
  OFF(side_pidx);
  OFF(changed_side);
  OFF(worker);
  OFF(peer_mac);
#undef OFF
  o.Set("size", static_cast<uint32_t>(sizeof(struct dp_conn_info)));
  return o;
}

Napi::Value EventsEnable(const Napi::CallbackInfo &info) {
  bool on;
  if (!CheckArgs(info, 1) || !ToBool(info[0], "enabled", &on)) return info.Env().Undefined();
  dp_events_enable(on ? 1 : 0);
  return info.Env().Undefined();
}

// eventsDrain(max): { buffer, count, dropped } — never blocks.
Napi::Value EventsDrain(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t max;
  if (!CheckArgs(info, 1) || !ToU32(info[0], "max", 0, 1u << 20, &max)) return env.Undefined();
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(env, sizeof(struct dp_conn_info) * (max ? max : 1));
  uint64_t dropped = 0;
  unsigned n = dp_events_drain(reinterpret_cast<struct dp_conn_info *>(buf.Data()), max, &dropped);
  Napi::Object o = Napi::Object::New(env);
  o.Set("buffer", buf);
  o.Set("count", n);
  o.Set("dropped", Napi::BigInt::New(env, dropped));
  return o;
}

// eventEncoder({eventType, state, protocol: number[256], sideClient, sideServer, codeClosed,
// codePath, codeIcmp, flagLocal, names: string[]}): an opaque encoder for encodeEvents. The
// tables come from the control plane's own enum mappings, so the C encoder restates none.
bool ToTable(Napi::Object o, const char *key, uint32_t out[256]) {
  Napi::Array a;
  std::string name = std::string("encoder.") + key;
  if (!ToArray(o.Get(key), name, &a)) return false;
  if (a.Length() != 256) return RangeFail(o.Env(), name + " must have 256 entries");
  for (uint32_t i = 0; i < 256; i++)
    if (!ToU32(a.Get(i), name + "[" + std::to_string(i) + "]", 0, UINT32_MAX, &out[i])) return false;
  return true;
}

Napi::Value EventEncoder(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o;
  Napi::Array names;
  auto *x = new dp_ev_wire_ctx();
  memset(x, 0, sizeof(*x));
  bool ok = CheckArgs(info, 1) && ToObject(info[0], "encoder", &o) && ToTable(o, "eventType", x->event_type) &&
            ToTable(o, "state", x->state) && ToTable(o, "protocol", x->protocol) &&
            ToU32(o.Get("sideClient"), "encoder.sideClient", 0, UINT32_MAX, &x->side_client) &&
            ToU32(o.Get("sideServer"), "encoder.sideServer", 0, UINT32_MAX, &x->side_server) &&
            ToUint(o.Get("codeClosed"), "encoder.codeClosed", 0, 255, &x->code_closed) &&
            ToUint(o.Get("codePath"), "encoder.codePath", 0, 255, &x->code_path) &&
            ToUint(o.Get("codeIcmp"), "encoder.codeIcmp", 0, 255, &x->code_icmp) &&
            ToUint(o.Get("flagLocal"), "encoder.flagLocal", 0, 255, &x->flag_local) &&
            ToArray(o.Get("names"), "encoder.names", &names);
  if (ok && names.Length() > DP_EV_WIRE_PORTS) ok = RangeFail(env, "encoder.names holds at most 255 names");
  for (uint32_t i = 0; ok && i < names.Length(); i++) {
    std::string s;
    std::string where = "encoder.names[" + std::to_string(i) + "]";
    ok = ToString(names.Get(i), where, &s);
    if (ok && s.size() > DP_EV_WIRE_NAME_MAX) ok = RangeFail(env, where + " is longer than 255 bytes");
    if (!ok) break;
    memcpy(x->name[i], s.data(), s.size());
    x->name_len[i] = static_cast<uint8_t>(s.size());
    if (x->name_len[i] > x->longest) x->longest = x->name_len[i];
  }
  if (!ok) {
    delete x;
    return env.Undefined();
  }
  return Napi::External<dp_ev_wire_ctx>::New(env, x, [](Napi::Env, dp_ev_wire_ctx *p) { delete p; });
}

// encodeEvents(encoder, records: Buffer, count, firstSeq: bigint): {buf, starts, ends}
// (dp_event_wire.h): the drained records as WatchConnEventsResponse messages, laid out as
// WatchConnEventBatchesResponse elements. buf is exactly the bytes written; starts and ends share
// one ArrayBuffer.
Napi::Value EncodeEvents(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t count;
  if (!CheckArgs(info, 4)) return env.Undefined();
  if (!info[0].IsExternal()) {
    TypeFail(env, "encoder must come from eventEncoder()");
    return env.Undefined();
  }
  const dp_ev_wire_ctx *x = info[0].As<Napi::External<dp_ev_wire_ctx>>().Data();
  if (!info[1].IsBuffer()) {
    TypeFail(env, "records must be a Buffer");
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> recs = info[1].As<Napi::Buffer<uint8_t>>();
  if (!ToU32(info[2], "count", 0, 1u << 20, &count)) return env.Undefined();
  if (recs.Length() < static_cast<size_t>(count) * sizeof(struct dp_conn_info)) {
    RangeFail(env, "records holds fewer than count records");
    return env.Undefined();
  }
  if (!info[3].IsBigInt()) {
    TypeFail(env, "firstSeq must be a bigint");
    return env.Undefined();
  }
  bool lossless;
  uint64_t first = info[3].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    RangeFail(env, "firstSeq must be in 0..2^64-1");
    return env.Undefined();
  }
  // One scratch buffer per thread, grown to the largest batch seen; the result is an exact copy,
  // so a batch kept in the history holds no slack.
  thread_local std::vector<uint8_t> scratch;
  size_t bound = dp_ev_wire_bound(x, count);
  if (scratch.size() < bound) scratch.resize(bound);
  Napi::ArrayBuffer offs = Napi::ArrayBuffer::New(env, 8 * static_cast<size_t>(count));
  auto *starts = static_cast<uint32_t *>(offs.Data());
  size_t n = dp_ev_wire_encode(x, recs.Data(), count, first, scratch.data(), starts, starts + count);
  Napi::Object o = Napi::Object::New(env);
  o.Set("buf", Napi::Buffer<uint8_t>::Copy(env, scratch.data(), n));
  o.Set("starts", Napi::Uint32Array::New(env, count, offs, 0));
  o.Set("ends", Napi::Uint32Array::New(env, count, offs, 4 * static_cast<size_t>(count)));
  return o;
}

Napi::Buffer<uint8_t> InfoBuffer(Napi::Env env, const struct dp_conn_info *v, size_t n) {
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t *>(v), sizeof(*v) * n);
}

std::string TimeoutText(int64_t ret, const char *what) { return ret == -ETIMEDOUT ? what : ""; }

// connsDump(worker, cursor, max): Promise<{buffer, count, cursor, done}>
struct DumpJob {
  unsigned worker;
  uint32_t cursor;
  std::vector<struct dp_conn_info> out;
  int done;
};

Napi::Value ConnsDump(const Napi::CallbackInfo &info) {
  uint32_t worker, cursor, max;
  if (!CheckArgs(info, 3) || !ToU32(info[0], "worker", 0, 1024, &worker) ||
      !ToU32(info[1], "cursor", 0, UINT32_MAX, &cursor) || !ToU32(info[2], "max", 0, 65536, &max))
    return info.Env().Undefined();
  DumpJob job{worker, cursor, std::vector<struct dp_conn_info>(max ? max : 1), 0};
  return RunPromise(
      info.Env(), std::move(job),
      [](DumpJob &j) { return dp_conns_dump(j.worker, &j.cursor, j.out.data(), (unsigned)j.out.size(), &j.done); },
      [](Napi::Env env, DumpJob &j, int64_t n) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("buffer", InfoBuffer(env, j.out.data(), static_cast<size_t>(n)));
        o.Set("count", static_cast<double>(n));
        o.Set("cursor", j.cursor);
        o.Set("done", j.done != 0);
        return o;
      },
      [](const DumpJob &, int64_t ret) { return TimeoutText(ret, "worker did not answer the conn dump in time"); });
}

// Reads {protocol, client, clientPort, vip, vipPort, real, realPort} (addresses "" = any, ports
// in host order, 0 = any) into a dp_conn_filter in network order. False with a JS exception.
bool ParseConnFilter(Napi::Value arg, dp_conn_filter *f) {
  Napi::Object o;
  memset(f, 0, sizeof(*f));
  if (!ToObject(arg, "filter", &o) || !ToUint(o.Get("protocol"), "filter.protocol", 0, 255, &f->proto) ||
      !ToIp(o.Get("client"), "filter.client", true, &f->caddr) || !ToIp(o.Get("vip"), "filter.vip", true, &f->vaddr) ||
      !ToIp(o.Get("real"), "filter.real", true, &f->raddr))
    return false;
  const char *names[] = {"clientPort", "vipPort", "realPort"};
  uint16_t *ports[] = {&f->cport, &f->vport, &f->rport};
  for (int i = 0; i < 3; i++) {
    uint16_t p;
    if (!ToUint(o.Get(names[i]), std::string("filter.") + names[i], 0, 65535, &p)) return false;
    *ports[i] = htons(p);
  }
  return true;
}

// connsDelete({protocol, client, clientPort, vip, vipPort, real, realPort}): Promise<bigint>
Napi::Value ConnsDelete(const Napi::CallbackInfo &info) {
  dp_conn_filter f;
  if (!CheckArgs(info, 1) || !ParseConnFilter(info[0], &f)) return info.Env().Undefined();
  return RunPromise(
      info.Env(), f, [](dp_conn_filter &j) { return dp_conns_delete(&j); },
      [](Napi::Env env, dp_conn_filter &, int64_t n) -> Napi::Value { return Napi::BigInt::New(env, n); },
      [](const dp_conn_filter &, int64_t ret) { return TimeoutText(ret, "worker did not answer in time"); });
}

// connGet({protocol, client, clientPort, vip, vipPort, real: "", realPort: 0}): Promise<{buffer, count}>
// The client-side key of one conn; count is 0 when no worker has it.
struct GetJob {
  dp_conn_filter f;
  struct dp_conn_info out;
};

Napi::Value ConnGet(const Napi::CallbackInfo &info) {
  GetJob job{};
  if (!CheckArgs(info, 1) || !ParseConnFilter(info[0], &job.f)) return info.Env().Undefined();
  return RunPromise(
      info.Env(), job, [](GetJob &j) { return dp_conn_get(&j.f, &j.out); },
      [](Napi::Env env, GetJob &j, int64_t n) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("buffer", InfoBuffer(env, &j.out, n == 1 ? 1 : 0));
        o.Set("count", static_cast<double>(n));
        return o;
      },
      [](const GetJob &, int64_t ret) { return TimeoutText(ret, "worker did not answer in time"); });
}

Napi::Value NbWorkers(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), dp_nb_workers()); }

}  // namespace

void ExportConns(Napi::Env env, Napi::Object exports) {
  exports.Set("connInfoLayout", Napi::Function::New(env, ConnInfoLayout));
  exports.Set("eventsEnable", Napi::Function::New(env, EventsEnable));
  exports.Set("eventsDrain", Napi::Function::New(env, EventsDrain));
  exports.Set("eventEncoder", Napi::Function::New(env, EventEncoder));
  exports.Set("encodeEvents", Napi::Function::New(env, EncodeEvents));
  exports.Set("connsDump", Napi::Function::New(env, ConnsDump));
  exports.Set("connsDelete", Napi::Function::New(env, ConnsDelete));
  exports.Set("connGet", Napi::Function::New(env, ConnGet));
  exports.Set("nbWorkers", Napi::Function::New(env, NbWorkers));
}

}  // namespace retrace_js
