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

#include "dp.h"
#include "dp_counters.h"

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
      !GetU32(env, o, "idleSleepUs", 0, 1000000, &conf->idle_sleep_us, "conf."))
    return false;
  conf->burst = static_cast<uint16_t>(burst);
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
  return exports;
}

}  // namespace

NODE_API_MODULE(retrace, Init)
