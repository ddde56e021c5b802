// binding.cc: the Node-API face of the dataplane. It only marshals: checks
// argument counts and types (TypeError), converts -errno into an Error with a
// string `code` ("EINVAL", "ENODEV", ...), passes 64-bit values as BigInt.
// All logic lives in the C files behind dp.h. src/dataplane/binding.ts is the
// only module that loads this addon.
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <arpa/inet.h>

#include "dp.h"
#include "dp_counters.h"
#include "dp_ctl.h"
#include "dp_events.h"

namespace {

Napi::Error ErrnoError(Napi::Env env, int neg_errno, const std::string &msg) {
  int e = neg_errno < 0 ? -neg_errno : neg_errno;
  const char *name = strerrorname_np(e);
  Napi::Error err = Napi::Error::New(env, msg.empty() ? std::string(strerror(e)) : msg);
  err.Set("code", Napi::String::New(env, name ? name : "EIO"));
  err.Set("errno", Napi::Number::New(env, -e));
  return err;
}

bool CheckArgs(const Napi::CallbackInfo &info, size_t n) {
  if (info.Length() != n) {
    Napi::TypeError::New(info.Env(), "expected " + std::to_string(n) + " argument(s)")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

std::string MacString(const uint8_t mac[6]) {
  char buf[18];
  snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
           mac[4], mac[5]);
  return buf;
}

// ealInit(argv: string[]): void
Napi::Value EalInit(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 1)) return env.Undefined();
  if (!info[0].IsArray()) {
    Napi::TypeError::New(env, "argv must be an array of strings").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<std::string> args;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) {
      Napi::TypeError::New(env, "argv[" + std::to_string(i) + "] must be a string")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    args.push_back(v.As<Napi::String>().Utf8Value());
  }
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

bool GetU32(Napi::Env env, Napi::Object o, const char *key, uint32_t min, uint32_t max,
            uint32_t *out, const std::string &where) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) {
    Napi::TypeError::New(env, where + key + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < min || d > max || d != static_cast<double>(static_cast<uint32_t>(d))) {
    Napi::RangeError::New(env, where + key + " must be an integer in " + std::to_string(min) +
                                   ".." + std::to_string(max))
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<uint32_t>(d);
  return true;
}

bool GetStr(Napi::Env env, Napi::Object o, const char *key, char *out, size_t len,
            const std::string &where) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) {
    Napi::TypeError::New(env, where + key + " must be a string").ThrowAsJavaScriptException();
    return false;
  }
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() || s.size() >= len) {
    Napi::RangeError::New(env, where + key + " must be 1.." + std::to_string(len - 1) +
                                   " characters")
        .ThrowAsJavaScriptException();
    return false;
  }
  memcpy(out, s.c_str(), s.size() + 1);
  return true;
}

bool ParseConf(Napi::Env env, Napi::Value val, dp_conf *conf) {
  memset(conf, 0, sizeof(*conf));
  if (!val.IsObject()) {
    Napi::TypeError::New(env, "conf must be an object").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object o = val.As<Napi::Object>();
  uint32_t burst, v;
  if (!GetU32(env, o, "mbufs", 1, 1u << 30, &conf->nb_mbufs, "conf.") ||
      !GetU32(env, o, "mbufCache", 0, 512, &conf->mbuf_cache, "conf.") ||
      !GetU32(env, o, "burst", 1, DP_MAX_BURST, &burst, "conf.") ||
      !GetU32(env, o, "idlePauseAfter", 0, UINT32_MAX, &conf->idle_pause_after, "conf.") ||
      !GetU32(env, o, "idleSleepAfter", 0, UINT32_MAX, &conf->idle_sleep_after, "conf.") ||
      !GetU32(env, o, "idleSleepUs", 0, 1000000, &conf->idle_sleep_us, "conf.") ||
      !GetU32(env, o, "maxConns", 1024, 1u << 26, &conf->max_conns, "conf.") ||
      !GetU32(env, o, "icmpRate", 0, 100000000, &conf->icmp_rate, "conf.") ||
      !GetU32(env, o, "icmpBurst", 1, 100000000, &conf->icmp_burst, "conf.") ||
      !GetU32(env, o, "eventRing", 64, 1u << 24, &conf->event_ring, "conf."))
    return false;
  conf->burst = static_cast<uint16_t>(burst);
  conf->manual = false;
  Napi::Value pv = o.Get("ports");
  if (!pv.IsArray()) {
    Napi::TypeError::New(env, "conf.ports must be an array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array ports = pv.As<Napi::Array>();
  if (ports.Length() == 0 || ports.Length() > DP_MAX_PORTS) {
    Napi::RangeError::New(env, "conf.ports must have 1.." + std::to_string(DP_MAX_PORTS) +
                                   " entries")
        .ThrowAsJavaScriptException();
    return false;
  }
  conf->nb_ports = static_cast<uint16_t>(ports.Length());
  for (uint32_t i = 0; i < ports.Length(); i++) {
    std::string where = "conf.ports[" + std::to_string(i) + "].";
    Napi::Value e = ports.Get(i);
    if (!e.IsObject()) {
      Napi::TypeError::New(env, where + " must be an object").ThrowAsJavaScriptException();
      return false;
    }
    Napi::Object po = e.As<Napi::Object>();
    dp_port_conf *pc = &conf->ports[i];
    if (!GetStr(env, po, "name", pc->name, sizeof(pc->name), where) ||
        !GetStr(env, po, "devname", pc->devname, sizeof(pc->devname), where))
      return false;
    if (!GetU32(env, po, "mtu", 68, 9600, &v, where)) return false;
    pc->mtu = static_cast<uint16_t>(v);
    if (!GetU32(env, po, "rxDesc", 1, 32768, &v, where)) return false;
    pc->rx_desc = static_cast<uint16_t>(v);
    if (!GetU32(env, po, "txDesc", 1, 32768, &v, where)) return false;
    pc->tx_desc = static_cast<uint16_t>(v);
    Napi::Value prom = po.Get("promiscuous");
    pc->promiscuous = prom.IsBoolean() && prom.As<Napi::Boolean>().Value();
    Napi::Value mac = po.Get("mac");
    if (!mac.IsUndefined() && !mac.IsNull()) {
      if (!mac.IsString()) {
        Napi::TypeError::New(env, where + "mac must be a string").ThrowAsJavaScriptException();
        return false;
      }
      std::string s = mac.As<Napi::String>().Utf8Value();
      unsigned b[6];
      if (sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4],
                 &b[5]) != 6) {
        Napi::TypeError::New(env, where + "mac must look like aa:bb:cc:dd:ee:ff")
            .ThrowAsJavaScriptException();
        return false;
      }
      for (int k = 0; k < 6; k++) pc->mac[k] = static_cast<uint8_t>(b[k]);
      pc->has_mac = true;
    }
  }
  return true;
}

// start(conf): Promise<void>. Port start may block on the driver (af_packet
// creates and maps kernel rings), so it runs off the JS thread; the control
// thread makes no other dataplane call until the promise settles (state stays
// EAL_READY until everything is up).
class StartWorker : public Napi::AsyncWorker {
 public:
  StartWorker(Napi::Env env, const dp_conf &conf)
      : Napi::AsyncWorker(env), conf_(conf), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { ret_ = dp_start(&conf_, err_, sizeof(err_)); }
  void OnOK() override {
    if (ret_ < 0)
      deferred_.Reject(ErrnoError(Env(), ret_, err_).Value());
    else
      deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error &e) override { deferred_.Reject(e.Value()); }

 private:
  dp_conf conf_;
  Napi::Promise::Deferred deferred_;
  int ret_ = 0;
  char err_[DP_ERR_LEN] = "";
};

Napi::Value Start(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 1)) return env.Undefined();
  dp_conf conf;
  if (!ParseConf(env, info[0], &conf)) return env.Undefined();
  auto *w = new StartWorker(env, conf);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// stop(): void. Synchronous on purpose: every read-only call also runs on the
// JS thread, so none can race with ports being closed. Workers return within
// one idle sleep.
Napi::Value Stop(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 0)) return env.Undefined();
  int ret = dp_stop();
  if (ret < 0) ErrnoError(env, ret, "dataplane is not running").ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value Cleanup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 0)) return env.Undefined();
  int ret = dp_cleanup();
  if (ret < 0) ErrnoError(env, ret, "EAL cannot be cleaned up in this state").ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value State(const Napi::CallbackInfo &info) {
  static const char *names[] = {"init", "eal_ready", "running", "stopped"};
  return Napi::String::New(info.Env(), names[dp_get_state()]);
}

Napi::Value DpdkVersion(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), dp_dpdk_version());
}

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

Napi::Array Strings(Napi::Env env, const char *const *names, size_t n) {
  Napi::Array a = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; i++) a.Set(static_cast<uint32_t>(i), names[i]);
  return a;
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


// ---- control API: thin marshalling over dp_ctl.h ----

bool ArgIp(const Napi::CallbackInfo &info, size_t i, const char *name, uint32_t *out) {
  if (info.Length() <= i || !info[i].IsString()) {
    Napi::TypeError::New(info.Env(), std::string(name) + " must be a string").ThrowAsJavaScriptException();
    return false;
  }
  std::string s = info[i].As<Napi::String>().Utf8Value();
  struct in_addr a;
  if (s.empty()) {
    *out = 0;
    return true;
  }
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) {
    Napi::TypeError::New(info.Env(), std::string(name) + " is not an IPv4 address").ThrowAsJavaScriptException();
    return false;
  }
  *out = a.s_addr;
  return true;
}

bool ArgU32(const Napi::CallbackInfo &info, size_t i, const char *name, uint32_t max, uint32_t *out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), std::string(name) + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d < 0 || d > max || d != static_cast<double>(static_cast<uint32_t>(d))) {
    Napi::RangeError::New(info.Env(), std::string(name) + " out of range").ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<uint32_t>(d);
  return true;
}

Napi::Value Result(Napi::Env env, int ret, const char *err) {
  if (ret < 0) ErrnoError(env, ret, err).ThrowAsJavaScriptException();
  return env.Undefined();
}

std::string IpString(uint32_t be) {
  char buf[INET_ADDRSTRLEN];
  struct in_addr a;
  a.s_addr = be;
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

// addrAdd(addr, plen, portIndex)
Napi::Value AddrAdd(const Napi::CallbackInfo &info) {
  uint32_t a, plen, pidx;
  if (!CheckArgs(info, 3) || !ArgIp(info, 0, "addr", &a) || !ArgU32(info, 1, "plen", 32, &plen) ||
      !ArgU32(info, 2, "port", 0xffff, &pidx))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_addr_add(a, (uint8_t)plen, (uint16_t)pidx, err, sizeof(err)), err);
}

Napi::Value AddrDel(const Napi::CallbackInfo &info) {
  uint32_t a, plen;
  if (!CheckArgs(info, 2) || !ArgIp(info, 0, "addr", &a) || !ArgU32(info, 1, "plen", 32, &plen))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_addr_del(a, (uint8_t)plen, err, sizeof(err)), err);
}

// routeAdd(prefix, plen, portIndex, gw)  gw "" = connected
Napi::Value RouteAdd(const Napi::CallbackInfo &info) {
  uint32_t pfx, plen, pidx, gw;
  if (!CheckArgs(info, 4) || !ArgIp(info, 0, "prefix", &pfx) || !ArgU32(info, 1, "plen", 32, &plen) ||
      !ArgU32(info, 2, "port", 0xffff, &pidx) || !ArgIp(info, 3, "gateway", &gw))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_route_add(pfx, (uint8_t)plen, (uint16_t)pidx, gw, err, sizeof(err)), err);
}

Napi::Value RouteDel(const Napi::CallbackInfo &info) {
  uint32_t pfx, plen;
  if (!CheckArgs(info, 2) || !ArgIp(info, 0, "prefix", &pfx) || !ArgU32(info, 1, "plen", 32, &plen))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_route_del(pfx, (uint8_t)plen, err, sizeof(err)), err);
}

// neighAdd(addr, mac, portIndex)
Napi::Value NeighAdd(const Napi::CallbackInfo &info) {
  uint32_t a, pidx;
  if (!CheckArgs(info, 3) || !ArgIp(info, 0, "addr", &a) || !ArgU32(info, 2, "port", 0xffff, &pidx))
    return info.Env().Undefined();
  if (!info[1].IsString()) {
    Napi::TypeError::New(info.Env(), "mac must be a string").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  unsigned b[6];
  uint8_t mac[6];
  if (sscanf(info[1].As<Napi::String>().Utf8Value().c_str(), "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1],
             &b[2], &b[3], &b[4], &b[5]) != 6) {
    Napi::TypeError::New(info.Env(), "mac must look like aa:bb:cc:dd:ee:ff").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  for (int k = 0; k < 6; k++) mac[k] = (uint8_t)b[k];
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_neigh_add(a, mac, (uint16_t)pidx, err, sizeof(err)), err);
}

Napi::Value NeighDel(const Napi::CallbackInfo &info) {
  uint32_t a;
  if (!CheckArgs(info, 1) || !ArgIp(info, 0, "addr", &a)) return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_neigh_del(a, err, sizeof(err)), err);
}

Napi::Value NeighList(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::vector<dp_neigh_info> v(DP_MAX_NEIGH);
  int n = dp_ctl_neigh_list(v.data(), DP_MAX_NEIGH);
  if (n < 0) return Result(env, n, "dataplane is not running");
  Napi::Array out = Napi::Array::New(env);
  for (int i = 0; i < n && i < DP_MAX_NEIGH; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("addr", IpString(v[i].addr));
    o.Set("mac", MacString(v[i].mac));
    o.Set("port", v[i].pidx);
    o.Set("static", v[i].is_static);
    o.Set("ageSeconds", v[i].age_s);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

Napi::Value LipAdd(const Napi::CallbackInfo &info) {
  uint32_t a, pidx;
  if (!CheckArgs(info, 2) || !ArgIp(info, 0, "addr", &a) || !ArgU32(info, 1, "port", 0xffff, &pidx))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_lip_add(a, (uint16_t)pidx, err, sizeof(err)), err);
}

Napi::Value LipDel(const Napi::CallbackInfo &info) {
  uint32_t a;
  if (!CheckArgs(info, 1) || !ArgIp(info, 0, "addr", &a)) return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_lip_del(a, err, sizeof(err)), err);
}

Napi::Value LipUsage(const Napi::CallbackInfo &info) {
  uint32_t a;
  if (!CheckArgs(info, 1) || !ArgIp(info, 0, "addr", &a)) return info.Env().Undefined();
  uint64_t used = 0, cap = 0;
  int ret = dp_ctl_lip_in_use(a, &used, &cap);
  if (ret < 0) return Result(info.Env(), ret, "no such local address");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("inUse", Napi::BigInt::New(info.Env(), used));
  o.Set("capacity", Napi::BigInt::New(info.Env(), cap));
  return o;
}

bool ServiceArgs(const Napi::CallbackInfo &info, uint32_t *proto, uint32_t *vaddr, uint32_t *vport) {
  return ArgU32(info, 0, "protocol", 255, proto) && ArgIp(info, 1, "vip", vaddr) &&
         ArgU32(info, 2, "port", 0xffff, vport);
}

// serviceAdd(proto, vip, port, sched, seed)
Napi::Value ServiceAdd(const Napi::CallbackInfo &info) {
  uint32_t proto, vaddr, vport, sched, seed;
  if (!CheckArgs(info, 5) || !ServiceArgs(info, &proto, &vaddr, &vport) ||
      !ArgU32(info, 3, "scheduler", 16, &sched) || !ArgU32(info, 4, "seed", UINT32_MAX, &seed))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_service_add((uint8_t)proto, vaddr, htons((uint16_t)vport), (int)sched, seed, err, sizeof(err)), err);
}

Napi::Value ServiceDel(const Napi::CallbackInfo &info) {
  uint32_t proto, vaddr, vport;
  if (!CheckArgs(info, 3) || !ServiceArgs(info, &proto, &vaddr, &vport)) return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_service_del((uint8_t)proto, vaddr, htons((uint16_t)vport), err, sizeof(err)), err);
}

Napi::Value ServiceSetSched(const Napi::CallbackInfo &info) {
  uint32_t proto, vaddr, vport, sched, seed;
  if (!CheckArgs(info, 5) || !ServiceArgs(info, &proto, &vaddr, &vport) ||
      !ArgU32(info, 3, "scheduler", 16, &sched) || !ArgU32(info, 4, "seed", UINT32_MAX, &seed))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_service_set_sched((uint8_t)proto, vaddr, htons((uint16_t)vport), (int)sched, seed, err, sizeof(err)), err);
}

// serviceSetReals(proto, vip, port, [{addr, port, weight}])
Napi::Value ServiceSetReals(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t proto, vaddr, vport;
  if (!CheckArgs(info, 4) || !ServiceArgs(info, &proto, &vaddr, &vport)) return env.Undefined();
  if (!info[3].IsArray()) {
    Napi::TypeError::New(env, "reals must be an array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[3].As<Napi::Array>();
  std::vector<dp_real_conf> reals(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    std::string where = "reals[" + std::to_string(i) + "].";
    if (!e.IsObject()) {
      Napi::TypeError::New(env, where + " must be an object").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Object o = e.As<Napi::Object>();
    Napi::Value a = o.Get("addr");
    struct in_addr ia;
    if (!a.IsString() || inet_pton(AF_INET, a.As<Napi::String>().Utf8Value().c_str(), &ia) != 1) {
      Napi::TypeError::New(env, where + "addr must be an IPv4 address").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint32_t port, weight;
    if (!GetU32(env, o, "port", 0, 65535, &port, where) || !GetU32(env, o, "weight", 0, 65535, &weight, where))
      return env.Undefined();
    reals[i] = dp_real_conf{ia.s_addr, htons((uint16_t)port), (uint16_t)weight};
  }
  char err[DP_ERR_LEN] = "";
  return Result(env, dp_ctl_service_set_reals((uint8_t)proto, vaddr, htons((uint16_t)vport), reals.data(),
                                              (unsigned)reals.size(), err, sizeof(err)), err);
}

Napi::Value ServiceReals(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t proto, vaddr, vport;
  if (!CheckArgs(info, 3) || !ServiceArgs(info, &proto, &vaddr, &vport)) return env.Undefined();
  // One buffer for every call (only the main thread calls in) rather than a vector per call
  // that zeroed DP_MAX_REALS entries (57 KB) to return a few: /metrics reads every service.
  // dp_ctl_service_reals writes every field of the entries it returns.
  static std::vector<dp_real_info> v(DP_MAX_REALS);
  uint64_t total = 0;
  int n = dp_ctl_service_reals((uint8_t)proto, vaddr, htons((uint16_t)vport), v.data(), DP_MAX_REALS, &total);
  if (n < 0) return Result(env, n, n == -ENOENT ? "no such service" : "dataplane is not running");
  Napi::Object res = Napi::Object::New(env);
  Napi::Array out = Napi::Array::New(env, n);
  for (int i = 0; i < n; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("addr", IpString(v[i].addr));
    o.Set("port", ntohs(v[i].port));
    o.Set("weight", v[i].weight);
    o.Set("activeConns", Napi::BigInt::New(env, v[i].active));
    o.Set("connsTotal", Napi::BigInt::New(env, v[i].conns_total));
    o.Set("packetsToReal", Napi::BigInt::New(env, v[i].pkts[0]));
    o.Set("packetsFromReal", Napi::BigInt::New(env, v[i].pkts[1]));
    o.Set("bytesToReal", Napi::BigInt::New(env, v[i].bytes[0]));
    o.Set("bytesFromReal", Napi::BigInt::New(env, v[i].bytes[1]));
    out.Set(static_cast<uint32_t>(i), o);
  }
  res.Set("reals", out);
  res.Set("connsTotal", Napi::BigInt::New(env, total));
  return res;
}

Napi::Value SymmetricSet(const Napi::CallbackInfo &info) {
  uint32_t proto;
  if (!CheckArgs(info, 2) || !ArgU32(info, 0, "protocol", 255, &proto)) return info.Env().Undefined();
  if (!info[1].IsBoolean()) {
    Napi::TypeError::New(info.Env(), "enabled must be a boolean").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Result(info.Env(), dp_ctl_symmetric_set((uint8_t)proto, info[1].As<Napi::Boolean>().Value()),
                "protocol must be TCP, UDP or ICMP");
}

Napi::Value SymmetricGet(const Napi::CallbackInfo &info) {
  uint32_t proto;
  if (!CheckArgs(info, 1) || !ArgU32(info, 0, "protocol", 255, &proto)) return info.Env().Undefined();
  return Napi::Boolean::New(info.Env(), dp_ctl_symmetric_get((uint8_t)proto));
}

static const char *kTimeoutNames[] = {"tcpSyn", "tcpEstablished", "tcpFin", "tcpClose", "udp", "icmp"};

Napi::Value TimeoutsSet(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, 1) || !info[0].IsObject()) {
    Napi::TypeError::New(env, "timeouts must be an object").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct dp_timeouts t;
  uint32_t *v = reinterpret_cast<uint32_t *>(&t);
  Napi::Object o = info[0].As<Napi::Object>();
  for (size_t i = 0; i < 6; i++)
    if (!GetU32(env, o, kTimeoutNames[i], 1, 7 * 86400, &v[i], "timeouts.")) return env.Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(env, dp_ctl_timeouts_set(&t, err, sizeof(err)), err);
}

Napi::Value TimeoutsGet(const Napi::CallbackInfo &info) {
  struct dp_timeouts t;
  dp_ctl_timeouts_get(&t);
  const uint32_t *v = reinterpret_cast<const uint32_t *>(&t);
  Napi::Object o = Napi::Object::New(info.Env());
  for (size_t i = 0; i < 6; i++) o.Set(kTimeoutNames[i], v[i]);
  return o;
}

Napi::Value ServicesConnsTotal(const Napi::CallbackInfo &info) {
  uint64_t total = 0;
  int rc = dp_ctl_services_conns_total(&total);
  if (rc < 0) return Result(info.Env(), rc, "dataplane is not running");
  return Napi::BigInt::New(info.Env(), total);
}

Napi::Value ConnCount(const Napi::CallbackInfo &info) {
  return Napi::BigInt::New(info.Env(), dp_ctl_conn_count());
}

// ---- conn events and snapshots (dp_events.h) ----

// connInfoLayout(): byte offsets of struct dp_conn_info, so TS decodes the
// buffers below without guessing the C layout.
Napi::Value ConnInfoLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#define OFF(f) o.Set(#f, static_cast<uint32_t>(offsetof(struct dp_conn_info, f)))
  OFF(time_ns); OFF(created_ns); OFF(last_ns); OFF(pkts); OFF(bytes);
  OFF(caddr); OFF(vaddr); OFF(laddr); OFF(raddr); OFF(cport); OFF(vport); OFF(lport); OFF(rport);
  OFF(type); OFF(proto); OFF(state); OFF(flags); OFF(side_pidx); OFF(changed_side); OFF(worker); OFF(peer_mac);
#undef OFF
  o.Set("size", static_cast<uint32_t>(sizeof(struct dp_conn_info)));
  return o;
}

Napi::Value EventsEnable(const Napi::CallbackInfo &info) {
  if (!CheckArgs(info, 1) || !info[0].IsBoolean()) {
    if (!info.Env().IsExceptionPending())
      Napi::TypeError::New(info.Env(), "enabled must be a boolean").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  dp_events_enable(info[0].As<Napi::Boolean>().Value() ? 1 : 0);
  return info.Env().Undefined();
}

// eventsDrain(max): { buffer, count, dropped } — never blocks.
Napi::Value EventsDrain(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t max;
  if (!CheckArgs(info, 1) || !ArgU32(info, 0, "max", 1u << 20, &max)) return env.Undefined();
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(env, sizeof(struct dp_conn_info) * (max ? max : 1));
  uint64_t dropped = 0;
  unsigned n = dp_events_drain(reinterpret_cast<struct dp_conn_info *>(buf.Data()), max, &dropped);
  Napi::Object o = Napi::Object::New(env);
  o.Set("buffer", buf);
  o.Set("count", n);
  o.Set("dropped", Napi::BigInt::New(env, dropped));
  return o;
}

class DumpWorker : public Napi::AsyncWorker {
 public:
  DumpWorker(Napi::Env env, unsigned worker, uint32_t cursor, unsigned max)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), worker_(worker),
        cursor_(cursor), out_(max ? max : 1) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { ret_ = dp_conns_dump(worker_, &cursor_, out_.data(), (unsigned)out_.size(), &done_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (ret_ < 0) {
      deferred_.Reject(ErrnoError(env, ret_, ret_ == -ETIMEDOUT ? "worker did not answer the conn dump in time" : "").Value());
      return;
    }
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t *>(out_.data()), sizeof(struct dp_conn_info) * ret_);
    Napi::Object o = Napi::Object::New(env);
    o.Set("buffer", buf);
    o.Set("count", ret_);
    o.Set("cursor", cursor_);
    o.Set("done", done_ != 0);
    deferred_.Resolve(o);
  }
 private:
  Napi::Promise::Deferred deferred_;
  unsigned worker_;
  uint32_t cursor_;
  std::vector<struct dp_conn_info> out_;
  int ret_ = 0;
  int done_ = 0;
};

// connsDump(worker, cursor, max): Promise<{buffer, count, cursor, done}>
Napi::Value ConnsDump(const Napi::CallbackInfo &info) {
  uint32_t worker, cursor, max;
  if (!CheckArgs(info, 3) || !ArgU32(info, 0, "worker", 1024, &worker) || !ArgU32(info, 1, "cursor", UINT32_MAX, &cursor) ||
      !ArgU32(info, 2, "max", 65536, &max))
    return info.Env().Undefined();
  auto *w = new DumpWorker(info.Env(), worker, cursor, max);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class DeleteWorker : public Napi::AsyncWorker {
 public:
  DeleteWorker(Napi::Env env, const dp_conn_filter &f)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), f_(f) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { ret_ = dp_conns_delete(&f_); }
  void OnOK() override {
    if (ret_ < 0)
      deferred_.Reject(ErrnoError(Env(), (int)ret_, ret_ == -ETIMEDOUT ? "worker did not answer in time" : "").Value());
    else
      deferred_.Resolve(Napi::BigInt::New(Env(), ret_));
  }
 private:
  Napi::Promise::Deferred deferred_;
  dp_conn_filter f_;
  int64_t ret_ = 0;
};

// Reads {protocol, client, clientPort, vip, vipPort, real, realPort} (addresses "" = any, ports
// in host order, 0 = any) into a dp_conn_filter in network order. False with a JS exception.
static bool ParseConnFilter(Napi::Env env, const Napi::Value &arg, dp_conn_filter *f) {
  if (!arg.IsObject()) {
    Napi::TypeError::New(env, "filter must be an object").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object o = arg.As<Napi::Object>();
  memset(f, 0, sizeof(*f));
  uint32_t v;
  if (!GetU32(env, o, "protocol", 0, 255, &v, "filter.")) return false;
  f->proto = (uint8_t)v;
  const char *addrs[] = {"client", "vip", "real"};
  uint32_t *dst[] = {&f->caddr, &f->vaddr, &f->raddr};
  for (int i = 0; i < 3; i++) {
    Napi::Value a = o.Get(addrs[i]);
    if (!a.IsString()) {
      Napi::TypeError::New(env, std::string("filter.") + addrs[i] + " must be a string").ThrowAsJavaScriptException();
      return false;
    }
    std::string s = a.As<Napi::String>().Utf8Value();
    struct in_addr ia;
    if (!s.empty()) {
      if (inet_pton(AF_INET, s.c_str(), &ia) != 1) {
        Napi::TypeError::New(env, std::string("filter.") + addrs[i] + " is not an IPv4 address").ThrowAsJavaScriptException();
        return false;
      }
      *dst[i] = ia.s_addr;
    }
  }
  const char *ports[] = {"clientPort", "vipPort", "realPort"};
  uint16_t *pdst[] = {&f->cport, &f->vport, &f->rport};
  for (int i = 0; i < 3; i++) {
    if (!GetU32(env, o, ports[i], 0, 65535, &v, "filter.")) return false;
    *pdst[i] = htons((uint16_t)v);
  }
  return true;
}

// connsDelete({protocol, client, clientPort, vip, vipPort, real, realPort}): Promise<bigint>
Napi::Value ConnsDelete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  dp_conn_filter f;
  if (!CheckArgs(info, 1) || !ParseConnFilter(env, info[0], &f)) return env.Undefined();
  auto *w = new DeleteWorker(env, f);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class GetConnWorker : public Napi::AsyncWorker {
 public:
  GetConnWorker(Napi::Env env, const dp_conn_filter &f)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), f_(f) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { ret_ = dp_conn_get(&f_, &out_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (ret_ < 0) {
      deferred_.Reject(ErrnoError(env, ret_, ret_ == -ETIMEDOUT ? "worker did not answer in time" : "").Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("buffer", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t *>(&out_), ret_ == 1 ? sizeof(out_) : 0));
    o.Set("count", ret_);
    deferred_.Resolve(o);
  }
 private:
  Napi::Promise::Deferred deferred_;
  dp_conn_filter f_;
  struct dp_conn_info out_ {};
  int ret_ = 0;
};

// connGet({protocol, client, clientPort, vip, vipPort, real: "", realPort: 0}): Promise<{buffer, count}>
// The client-side key of one conn; count is 0 when no worker has it.
Napi::Value ConnGet(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  dp_conn_filter f;
  if (!CheckArgs(info, 1) || !ParseConnFilter(env, info[0], &f)) return env.Undefined();
  auto *w = new GetConnWorker(env, f);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value NbWorkers(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), dp_nb_workers());
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
  exports.Set("addrAdd", Napi::Function::New(env, AddrAdd));
  exports.Set("addrDel", Napi::Function::New(env, AddrDel));
  exports.Set("routeAdd", Napi::Function::New(env, RouteAdd));
  exports.Set("routeDel", Napi::Function::New(env, RouteDel));
  exports.Set("neighAdd", Napi::Function::New(env, NeighAdd));
  exports.Set("neighDel", Napi::Function::New(env, NeighDel));
  exports.Set("neighList", Napi::Function::New(env, NeighList));
  exports.Set("lipAdd", Napi::Function::New(env, LipAdd));
  exports.Set("lipDel", Napi::Function::New(env, LipDel));
  exports.Set("lipUsage", Napi::Function::New(env, LipUsage));
  exports.Set("serviceAdd", Napi::Function::New(env, ServiceAdd));
  exports.Set("serviceDel", Napi::Function::New(env, ServiceDel));
  exports.Set("serviceSetSched", Napi::Function::New(env, ServiceSetSched));
  exports.Set("serviceSetReals", Napi::Function::New(env, ServiceSetReals));
  exports.Set("serviceReals", Napi::Function::New(env, ServiceReals));
  exports.Set("symmetricSet", Napi::Function::New(env, SymmetricSet));
  exports.Set("symmetricGet", Napi::Function::New(env, SymmetricGet));
  exports.Set("timeoutsSet", Napi::Function::New(env, TimeoutsSet));
  exports.Set("timeoutsGet", Napi::Function::New(env, TimeoutsGet));
  exports.Set("connCount", Napi::Function::New(env, ConnCount));
  exports.Set("servicesConnsTotal", Napi::Function::New(env, ServicesConnsTotal));
  exports.Set("connInfoLayout", Napi::Function::New(env, ConnInfoLayout));
  exports.Set("eventsEnable", Napi::Function::New(env, EventsEnable));
  exports.Set("eventsDrain", Napi::Function::New(env, EventsDrain));
  exports.Set("connsDump", Napi::Function::New(env, ConnsDump));
  exports.Set("connsDelete", Napi::Function::New(env, ConnsDelete));
  exports.Set("connGet", Napi::Function::New(env, ConnGet));
  exports.Set("nbWorkers", Napi::Function::New(env, NbWorkers));
  return exports;
}

}  // namespace

NODE_API_MODULE(retrace, Init)
