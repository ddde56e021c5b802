// binding.cc: the Node-API face of the dataplane (see binding.h for the
// rules every export follows). This file: EAL and dataplane life cycle,
// read-only views (ports, lcores, mempool, counters) and the module's
// export table. Control tables are in binding_tables.cc, conn events and
// snapshots in binding_conns.cc.
#include <napi.h>

#include <cstring>
#include <string>
#include <vector>

#include "binding.h"
#include "binding_promise.h"
#include "dp.h"
#include "dp_counters.h"

namespace retrace_js {
namespace {

// ealInit(argv: string[]): void
Napi::Value EalInit(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Array arr;
  if (!CheckArgs(info, 1) || !ToArray(info[0], "argv", &arr)) return env.Undefined();
  std::vector<std::string> args(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++)
    if (!ToString(arr.Get(i), "argv[" + std::to_string(i) + "]", &args[i])) return env.Undefined();
  // EAL keeps pointers into argv (e.g. for devargs), so the strings live for
  // the life of the process.
  static std::vector<std::string> keep;
  static std::vector<char *> argv;
  keep = args;
  argv.clear();
  for (auto &s : keep) argv.push_back(const_cast<char *>(s.c_str()));
  argv.push_back(nullptr);
  char err[DP_ERR_LEN] = "";
  int ret = dp_eal_init(static_cast<int>(keep.size()), argv.data(), err, sizeof(err));
  if (ret < 0) ErrnoError(env, ret, err).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool ParsePortConf(Napi::Value val, const std::string &where, dp_port_conf *pc) {
  Napi::Object po;
  if (!ToObject(val, where, &po) || !ToCString(po.Get("name"), where + ".name", pc->name, sizeof(pc->name)) ||
      !ToCString(po.Get("devname"), where + ".devname", pc->devname, sizeof(pc->devname)) ||
      !ToUint(po.Get("mtu"), where + ".mtu", 68, 9600, &pc->mtu) ||
      !ToUint(po.Get("rxDesc"), where + ".rxDesc", 1, 32768, &pc->rx_desc) ||
      !ToUint(po.Get("txDesc"), where + ".txDesc", 1, 32768, &pc->tx_desc))
    return false;
  Napi::Value prom = po.Get("promiscuous");
  pc->promiscuous = prom.IsBoolean() && prom.As<Napi::Boolean>().Value();
  // Kernel interface: absent = none.
  Napi::Value kni = po.Get("kernel");
  if (!kni.IsUndefined() && !kni.IsNull()) {
    Napi::Object ko;
    if (!ToObject(kni, where + ".kernel", &ko) ||
        !ToCString(ko.Get("devname"), where + ".kernel.devname", pc->kni_devname, sizeof(pc->kni_devname)) ||
        !ToUint(ko.Get("queue"), where + ".kernel.queue", 1, 1u << 20, &pc->kni_queue) ||
        !ToUint(ko.Get("rate"), where + ".kernel.rate", 0, 100000000, &pc->kni_rate) ||
        !ToUint(ko.Get("burst"), where + ".kernel.burst", 1, 100000000, &pc->kni_burst))
      return false;
  }
  Napi::Value mac = po.Get("mac");
  if (mac.IsUndefined() || mac.IsNull()) return true;
  pc->has_mac = true;
  return ToMac(mac, where + ".mac", pc->mac);
}

bool ParseConf(Napi::Value val, dp_conf *conf) {
  memset(conf, 0, sizeof(*conf));
  Napi::Object o;
  if (!ToObject(val, "conf", &o)) return false;
  if (!ToU32(o.Get("mbufs"), "conf.mbufs", 1, 1u << 30, &conf->nb_mbufs) ||
      !ToU32(o.Get("mbufCache"), "conf.mbufCache", 0, 512, &conf->mbuf_cache) ||
      !ToUint(o.Get("burst"), "conf.burst", 1, DP_MAX_BURST, &conf->burst) ||
      !ToU32(o.Get("idlePauseAfter"), "conf.idlePauseAfter", 0, UINT32_MAX, &conf->idle_pause_after) ||
      !ToU32(o.Get("idleSleepAfter"), "conf.idleSleepAfter", 0, UINT32_MAX, &conf->idle_sleep_after) ||
      !ToU32(o.Get("idleSleepUs"), "conf.idleSleepUs", 0, 1000000, &conf->idle_sleep_us) ||
      !ToU32(o.Get("maxConns"), "conf.maxConns", 1024, 1u << 26, &conf->max_conns) ||
      !ToU32(o.Get("icmpRate"), "conf.icmpRate", 0, 100000000, &conf->icmp_rate) ||
      !ToU32(o.Get("icmpBurst"), "conf.icmpBurst", 1, 100000000, &conf->icmp_burst) ||
      !ToU32(o.Get("eventRing"), "conf.eventRing", 64, 1u << 24, &conf->event_ring) ||
      !ToUint(o.Get("pressureConnsPercent"), "conf.pressureConnsPercent", 0, 100, &conf->pressure_conns_pct) ||
      !ToUint(o.Get("pressurePortsPercent"), "conf.pressurePortsPercent", 0, 100, &conf->pressure_ports_pct) ||
      !ToU32(o.Get("evictMinAgeMs"), "conf.evictMinAgeMs", 0, 3600000, &conf->evict_min_age_ms))
    return false;
  Napi::Value evict = o.Get("evictEmbryonic");
  if (!evict.IsBoolean()) return RangeFail(val.Env(), "conf.evictEmbryonic must be a boolean");
  conf->evict_embryonic = evict.As<Napi::Boolean>().Value();
  conf->manual = false;
  Napi::Array ports;
  if (!ToArray(o.Get("ports"), "conf.ports", &ports)) return false;
  if (ports.Length() == 0 || ports.Length() > DP_MAX_PORTS)
    return RangeFail(val.Env(), "conf.ports must have 1.." + std::to_string(DP_MAX_PORTS) + " entries");
  conf->nb_ports = static_cast<uint16_t>(ports.Length());
  for (uint32_t i = 0; i < ports.Length(); i++)
    if (!ParsePortConf(ports.Get(i), "conf.ports[" + std::to_string(i) + "]", &conf->ports[i])) return false;
  return true;
}

// start(conf): Promise<void>. Port start may block on the driver (af_packet
// creates and maps kernel rings), so it runs off the JS thread; the control
// thread makes no other dataplane call until the promise settles (state stays
// EAL_READY until everything is up).
struct StartJob {
  dp_conf conf;
  char err[DP_ERR_LEN];
};

Napi::Value Start(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  StartJob job{};
  if (!CheckArgs(info, 1) || !ParseConf(info[0], &job.conf)) return env.Undefined();
  return RunPromise(
      env, job, [](StartJob &j) { return dp_start(&j.conf, j.err, sizeof(j.err)); },
      [](Napi::Env e, StartJob &, int64_t) -> Napi::Value { return e.Undefined(); },
      [](const StartJob &j, int64_t) { return std::string(j.err); });
}

// stop(): void. Synchronous on purpose: every read-only call also runs on the
// JS thread, so none can race with ports being closed. Workers return within
// one idle sleep.
Napi::Value Stop(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 0)) return env.Undefined();
  return Result(env, dp_stop(), "dataplane is not running");
}

Napi::Value Cleanup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 0)) return env.Undefined();
  return Result(env, dp_cleanup(), "EAL cannot be cleaned up in this state");
}

Napi::Value State(const Napi::CallbackInfo &info) {
  static const char *names[] = {"init", "eal_ready", "running", "stopped"};
  return Napi::String::New(info.Env(), names[dp_get_state()]);
}

Napi::Value DpdkVersion(const Napi::CallbackInfo &info) { return Napi::String::New(info.Env(), dp_dpdk_version()); }

Napi::Value Ports(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 0)) return env.Undefined();
  uint16_t n = dp_nb_ports();
  Napi::Array out = Napi::Array::New(env, n);
  for (uint16_t i = 0; i < n; i++) {
    struct dp_port_info pi;
    int ret = dp_port_info(i, &pi);
    if (ret < 0) {
      ErrnoError(env, ret, "cannot read port " + std::to_string(i)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", i);
    o.Set("name", pi.name);
    o.Set("devname", pi.devname);
    o.Set("driver", pi.driver);
    o.Set("portId", pi.port_id);
    o.Set("mac", MacString(pi.mac));
    o.Set("mtu", pi.mtu);
    o.Set("link", pi.link == DP_LINK_UP ? "up" : pi.link == DP_LINK_DOWN ? "down" : "unknown");
    o.Set("speedMbps", pi.speed_mbps);
    o.Set("rxQueues", pi.rx_queues);
    o.Set("txQueues", pi.tx_queues);
    Napi::Object st = Napi::Object::New(env);
    st.Set("rxPackets", Napi::BigInt::New(env, pi.rx_packets));
    st.Set("rxBytes", Napi::BigInt::New(env, pi.rx_bytes));
    st.Set("txPackets", Napi::BigInt::New(env, pi.tx_packets));
    st.Set("txBytes", Napi::BigInt::New(env, pi.tx_bytes));
    st.Set("rxErrors", Napi::BigInt::New(env, pi.rx_errors));
    st.Set("txErrors", Napi::BigInt::New(env, pi.tx_errors));
    st.Set("rxMissed", Napi::BigInt::New(env, pi.rx_missed));
    st.Set("rxNombuf", Napi::BigInt::New(env, pi.rx_nombuf));
    st.Set("txDropped", Napi::BigInt::New(env, pi.tx_dropped));
    st.Set("toKernel", Napi::BigInt::New(env, pi.to_kernel));
    st.Set("fromKernel", Napi::BigInt::New(env, pi.from_kernel));
    st.Set("kernelDropped", Napi::BigInt::New(env, pi.kernel_dropped));
    o.Set("hasKernel", pi.has_kni);
    o.Set("stats", st);
    out.Set(i, o);
  }
  return out;
}

Napi::Value Lcores(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  dp_lcore_info li[DP_MAX_WORKERS + 1];
  unsigned n = dp_lcores(li, DP_MAX_WORKERS + 1);
  Napi::Array out = Napi::Array::New(env, n);
  for (unsigned i = 0; i < n; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", li[i].lcore_id);
    o.Set("role", li[i].is_worker ? "worker" : "control");
    Napi::Array cpus = Napi::Array::New(env);
    uint32_t k = 0;
    for (unsigned c = 0; c < 64; c++)
      if (li[i].cpus & (UINT64_C(1) << c)) cpus.Set(k++, c);
    o.Set("cpus", cpus);
    o.Set("busyPolls", Napi::BigInt::New(env, li[i].busy_polls));
    o.Set("idlePolls", Napi::BigInt::New(env, li[i].idle_polls));
    out.Set(i, o);
  }
  return out;
}

Napi::Value Mempool(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct dp_mempool_info mi;
  if (dp_mempool_info(&mi) < 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("capacity", Napi::BigInt::New(env, mi.capacity));
  o.Set("inUse", Napi::BigInt::New(env, mi.in_use));
  o.Set("mbufSize", mi.mbuf_size);
  return o;
}

// counterLayout(): the names behind readCounters()'s flat array.
Napi::Value CounterLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("maxPorts", DP_MAX_PORTS);
  o.Set("protocols", Strings(env, dp_proto_names, DP_PROTO_MAX));
  o.Set("pathCounters", Strings(env, dp_path_counter_names, DP_PATH_MAX));
  o.Set("pathCounterHelp", Strings(env, dp_path_counter_help, DP_PATH_MAX));
  o.Set("drops", Strings(env, dp_drop_names, DP_DROP_MAX));
  o.Set("dropHelp", Strings(env, dp_drop_help, DP_DROP_MAX));
  o.Set("connCounters", Strings(env, dp_conn_counter_names, DP_CONN_CTR_MAX));
  o.Set("connCounterHelp", Strings(env, dp_conn_counter_help, DP_CONN_CTR_MAX));
  return o;
}

// readCounters(): BigUint64Array laid out as dp_counters.h describes.
Napi::Value ReadCounters(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, sizeof(uint64_t) * DP_COUNTERS_LEN);
  dp_counters_read(static_cast<uint64_t *>(buf.Data()));
  napi_value arr;
  napi_status s = napi_create_typedarray(env, napi_biguint64_array, DP_COUNTERS_LEN, buf, 0, &arr);
  if (s != napi_ok) {
    Napi::Error::New(env, "cannot create BigUint64Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Value(env, arr);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("ealInit", Napi::Function::New(env, EalInit));
  exports.Set("start", Napi::Function::New(env, Start));
  exports.Set("stop", Napi::Function::New(env, Stop));
  exports.Set("cleanup", Napi::Function::New(env, Cleanup));
  exports.Set("state", Napi::Function::New(env, State));
  exports.Set("dpdkVersion", Napi::Function::New(env, DpdkVersion));
  exports.Set("ports", Napi::Function::New(env, Ports));
  exports.Set("lcores", Napi::Function::New(env, Lcores));
  exports.Set("mempool", Napi::Function::New(env, Mempool));
  exports.Set("counterLayout", Napi::Function::New(env, CounterLayout));
  exports.Set("readCounters", Napi::Function::New(env, ReadCounters));
  ExportTables(env, exports);
  ExportConns(env, exports);
  return exports;
}

}  // namespace
}  // namespace retrace_js

// NODE_API_MODULE pastes its second argument into an identifier.
static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return retrace_js::Init(env, exports); }

NODE_API_MODULE(retrace, InitModule)
