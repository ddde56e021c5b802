// binding_tables.cc: thin marshalling over dp_ctl.h (addresses, routes,
// neighbours, LIPs, services and reals, switches, timeouts). Addresses and
// ports cross in host-friendly forms ("10.0.0.1", 80) and are converted to
// network order here. Rules: binding.h.
#include <napi.h>

#include <string>
#include <vector>

#include "binding.h"
#include "dp.h"
#include "dp_counters.h"
#include "dp_ctl.h"

namespace retrace_js {
namespace {

// limits(): the fixed sizes of the control tables (dp_ctl.h), so the control plane validates a
// whole document against them before changing anything.
Napi::Value Limits(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("localAddresses", DP_MAX_ADDRS);
  o.Set("lips", DP_MAX_LIPS);
  o.Set("services", DP_MAX_SERVICES);
  o.Set("realsPerService", DP_MAX_REALS);
  o.Set("routes", DP_MAX_ROUTES);
  o.Set("nextHops", DP_MAX_NEXTHOPS);
  o.Set("routeTbl8Groups", DP_LPM_TBL8S);
  o.Set("neighbors", DP_MAX_NEIGH);
  o.Set("prefixesPerList", DP_MAX_SVC_PREFIXES);
  return o;
}

// addrAdd(addr, plen, portIndex)
Napi::Value AddrAdd(const Napi::CallbackInfo &info) {
  uint32_t a;
  uint8_t plen;
  uint16_t pidx;
  if (!CheckArgs(info, 3) || !ToIp(info[0], "addr", true, &a) || !ToUint(info[1], "plen", 0, 32, &plen) ||
      !ToUint(info[2], "port", 0, 0xffff, &pidx))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_addr_add(a, plen, pidx, err, sizeof(err)), err);
}

Napi::Value AddrDel(const Napi::CallbackInfo &info) {
  uint32_t a;
  uint8_t plen;
  if (!CheckArgs(info, 2) || !ToIp(info[0], "addr", true, &a) || !ToUint(info[1], "plen", 0, 32, &plen))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_addr_del(a, plen, err, sizeof(err)), err);
}

// routeAdd(prefix, plen, portIndex, gw)  gw "" = connected
Napi::Value RouteAdd(const Napi::CallbackInfo &info) {
  uint32_t pfx, gw;
  uint8_t plen;
  uint16_t pidx;
  if (!CheckArgs(info, 4) || !ToIp(info[0], "prefix", true, &pfx) || !ToUint(info[1], "plen", 0, 32, &plen) ||
      !ToUint(info[2], "port", 0, 0xffff, &pidx) || !ToIp(info[3], "gateway", true, &gw))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_route_add(pfx, plen, pidx, gw, err, sizeof(err)), err);
}

Napi::Value RouteDel(const Napi::CallbackInfo &info) {
  uint32_t pfx;
  uint8_t plen;
  if (!CheckArgs(info, 2) || !ToIp(info[0], "prefix", true, &pfx) || !ToUint(info[1], "plen", 0, 32, &plen))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_route_del(pfx, plen, err, sizeof(err)), err);
}

// neighAdd(addr, mac, portIndex)
Napi::Value NeighAdd(const Napi::CallbackInfo &info) {
  uint32_t a;
  uint16_t pidx;
  uint8_t mac[6];
  if (!CheckArgs(info, 3) || !ToIp(info[0], "addr", true, &a) || !ToUint(info[2], "port", 0, 0xffff, &pidx) ||
      !ToMac(info[1], "mac", mac))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_neigh_add(a, mac, pidx, err, sizeof(err)), err);
}

Napi::Value NeighDel(const Napi::CallbackInfo &info) {
  uint32_t a;
  if (!CheckArgs(info, 1) || !ToIp(info[0], "addr", true, &a)) return info.Env().Undefined();
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
  uint32_t a;
  uint16_t pidx;
  if (!CheckArgs(info, 2) || !ToIp(info[0], "addr", true, &a) || !ToUint(info[1], "port", 0, 0xffff, &pidx))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_lip_add(a, pidx, err, sizeof(err)), err);
}

Napi::Value LipDel(const Napi::CallbackInfo &info) {
  uint32_t a;
  if (!CheckArgs(info, 1) || !ToIp(info[0], "addr", true, &a)) return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_lip_del(a, err, sizeof(err)), err);
}

Napi::Value LipUsage(const Napi::CallbackInfo &info) {
  uint32_t a;
  if (!CheckArgs(info, 1) || !ToIp(info[0], "addr", true, &a)) return info.Env().Undefined();
  uint64_t used = 0, cap = 0;
  int ret = dp_ctl_lip_in_use(a, &used, &cap);
  if (ret < 0) return Result(info.Env(), ret, "no such local address");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("inUse", Napi::BigInt::New(info.Env(), used));
  o.Set("capacity", Napi::BigInt::New(info.Env(), cap));
  return o;
}

// The (protocol, vip, port) that names a service, as the first three
// arguments; the port comes back in network order.
struct ServiceKey {
  uint8_t proto;
  uint32_t vaddr;
  uint16_t vport;
};

bool ServiceArgs(const Napi::CallbackInfo &info, ServiceKey *k) {
  uint16_t port;
  if (!ToUint(info[0], "protocol", 0, 255, &k->proto) || !ToIp(info[1], "vip", true, &k->vaddr) ||
      !ToUint(info[2], "port", 0, 0xffff, &port))
    return false;
  k->vport = htons(port);
  return true;
}

// serviceAdd(proto, vip, port, sched, seed)
Napi::Value ServiceAdd(const Napi::CallbackInfo &info) {
  ServiceKey k;
  uint32_t sched, seed;
  if (!CheckArgs(info, 5) || !ServiceArgs(info, &k) || !ToU32(info[3], "scheduler", 0, 16, &sched) ||
      !ToU32(info[4], "seed", 0, UINT32_MAX, &seed))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_service_add(k.proto, k.vaddr, k.vport, (int)sched, seed, err, sizeof(err)), err);
}

Napi::Value ServiceDel(const Napi::CallbackInfo &info) {
  ServiceKey k;
  if (!CheckArgs(info, 3) || !ServiceArgs(info, &k)) return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_service_del(k.proto, k.vaddr, k.vport, err, sizeof(err)), err);
}

Napi::Value ServiceSetSched(const Napi::CallbackInfo &info) {
  ServiceKey k;
  uint32_t sched, seed;
  if (!CheckArgs(info, 5) || !ServiceArgs(info, &k) || !ToU32(info[3], "scheduler", 0, 16, &sched) ||
      !ToU32(info[4], "seed", 0, UINT32_MAX, &seed))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_service_set_sched(k.proto, k.vaddr, k.vport, (int)sched, seed, err, sizeof(err)),
                err);
}

// serviceSetCaddr(proto, vip, port, mode): mode is enum dp_caddr_mode (0 none, 1 proxy v2, 2 proxy v1, 3 toa).
Napi::Value ServiceSetCaddr(const Napi::CallbackInfo &info) {
  ServiceKey k;
  uint32_t mode;
  if (!CheckArgs(info, 4) || !ServiceArgs(info, &k) || !ToU32(info[3], "mode", 0, 3, &mode))
    return info.Env().Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(), dp_ctl_service_set_caddr(k.proto, k.vaddr, k.vport, (int)mode, err, sizeof(err)), err);
}

bool ParseReal(Napi::Value val, const std::string &where, dp_real_conf *rc) {
  Napi::Object o;
  uint16_t port;
  if (!ToObject(val, where, &o) || !ToIp(o.Get("addr"), where + ".addr", false, &rc->addr) ||
      !ToUint(o.Get("port"), where + ".port", 0, 65535, &port) ||
      !ToUint(o.Get("weight"), where + ".weight", 0, 65535, &rc->weight))
    return false;
  rc->port = htons(port);
  return true;
}

// serviceSetReals(proto, vip, port, [{addr, port, weight}])
Napi::Value ServiceSetReals(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ServiceKey k;
  Napi::Array arr;
  if (!CheckArgs(info, 4) || !ServiceArgs(info, &k) || !ToArray(info[3], "reals", &arr)) return env.Undefined();
  std::vector<dp_real_conf> reals(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++)
    if (!ParseReal(arr.Get(i), "reals[" + std::to_string(i) + "]", &reals[i])) return env.Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(
      env, dp_ctl_service_set_reals(k.proto, k.vaddr, k.vport, reals.data(), (unsigned)reals.size(), err, sizeof(err)),
      err);
}

// serviceSetRealDown(proto, vip, port, realAddr, realPort, down)
Napi::Value ServiceSetRealDown(const Napi::CallbackInfo &info) {
  ServiceKey k;
  uint32_t raddr;
  uint16_t rport;
  if (!CheckArgs(info, 6) || !ServiceArgs(info, &k) || !ToIp(info[3], "real", false, &raddr) ||
      !ToUint(info[4], "realPort", 0, 65535, &rport))
    return info.Env().Undefined();
  if (!info[5].IsBoolean()) {
    Napi::TypeError::New(info.Env(), "down: expected a boolean").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  char err[DP_ERR_LEN] = "";
  return Result(info.Env(),
                dp_ctl_service_set_real_down(k.proto, k.vaddr, k.vport, raddr, htons(rport),
                                             info[5].As<Napi::Boolean>().Value(), err, sizeof(err)),
                err);
}

Napi::Value ServiceReals(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ServiceKey k;
  if (!CheckArgs(info, 3) || !ServiceArgs(info, &k)) return env.Undefined();
  // One buffer for every call (only the main thread calls in) rather than a vector per call
  // that zeroed DP_MAX_REALS entries (57 KB) to return a few: /metrics reads every service.
  // dp_ctl_service_reals writes every field of the entries it returns.
  static std::vector<dp_real_info> v(DP_MAX_REALS);
  uint64_t total = 0;
  int n = dp_ctl_service_reals(k.proto, k.vaddr, k.vport, v.data(), DP_MAX_REALS, &total);
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
    o.Set("down", Napi::Boolean::New(env, v[i].down));
    for (int c = 0; c < DP_REAL_MAX; c++)
      o.Set(CamelCase(dp_real_counter_names[c]), Napi::BigInt::New(env, v[i].ctr[c]));
    out.Set(static_cast<uint32_t>(i), o);
  }
  res.Set("reals", out);
  res.Set("connsTotal", Napi::BigInt::New(env, total));
  return res;
}

bool ParsePrefixes(Napi::Object o, const char *list, std::vector<dp_prefix> *out) {
  Napi::Array arr;
  if (!ToArray(o.Get(list), std::string("limits.") + list, &arr)) return false;
  out->resize(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    std::string where = std::string("limits.") + list + "[" + std::to_string(i) + "]";
    Napi::Object p;
    if (!ToObject(arr.Get(i), where, &p) || !ToIp(p.Get("addr"), where + ".addr", true, &(*out)[i].addr) ||
        !ToUint(p.Get("plen"), where + ".plen", 0, 32, &(*out)[i].plen))
      return false;
  }
  return true;
}

// serviceSetLimits(proto, vip, port, {maxConns, connRate, connBurst, allow: [{addr, plen}], deny: [...]})
Napi::Value ServiceSetLimits(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ServiceKey k;
  Napi::Object o;
  dp_svc_limits_conf lc = {};
  std::vector<dp_prefix> allow, deny;
  if (!CheckArgs(info, 4) || !ServiceArgs(info, &k) || !ToObject(info[3], "limits", &o) ||
      !ToU32(o.Get("maxConns"), "limits.maxConns", 0, UINT32_MAX, &lc.max_conns) ||
      !ToU32(o.Get("connRate"), "limits.connRate", 0, 1000000, &lc.conn_rate) ||
      !ToU32(o.Get("connBurst"), "limits.connBurst", 0, 1000000, &lc.conn_burst) ||
      !ParsePrefixes(o, "allow", &allow) || !ParsePrefixes(o, "deny", &deny))
    return env.Undefined();
  lc.allow = allow.data();
  lc.n_allow = (unsigned)allow.size();
  lc.deny = deny.data();
  lc.n_deny = (unsigned)deny.size();
  char err[DP_ERR_LEN] = "";
  return Result(env, dp_ctl_service_set_limits(k.proto, k.vaddr, k.vport, &lc, err, sizeof(err)), err);
}

// serviceDrops(proto, vip, port) -> {activeConns, <camelCase reason>: bigint ...}
Napi::Value ServiceDrops(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ServiceKey k;
  if (!CheckArgs(info, 3) || !ServiceArgs(info, &k)) return env.Undefined();
  uint64_t v[DP_SVC_DROP_MAX], active = 0;
  int rc = dp_ctl_service_drops(k.proto, k.vaddr, k.vport, v, &active);
  if (rc < 0) return Result(env, rc, rc == -ENOENT ? "no such service" : "dataplane is not running");
  Napi::Object o = Napi::Object::New(env);
  o.Set("activeConns", Napi::BigInt::New(env, active));
  for (int i = 0; i < DP_SVC_DROP_MAX; i++) o.Set(CamelCase(dp_svc_drop_names[i]), Napi::BigInt::New(env, v[i]));
  return o;
}

// serviceSetSynProxy(proto, vip, port, mode 0 off | 1 on | 2 auto, threshold)
Napi::Value ServiceSetSynProxy(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ServiceKey k;
  uint32_t mode, threshold;
  if (!CheckArgs(info, 5) || !ServiceArgs(info, &k) || !ToU32(info[3], "mode", 0, 2, &mode) ||
      !ToU32(info[4], "threshold", 0, UINT32_MAX, &threshold))
    return env.Undefined();
  char err[DP_ERR_LEN] = "";
  return Result(env, dp_ctl_service_set_syn_proxy(k.proto, k.vaddr, k.vport, (int)mode, threshold, err, sizeof(err)),
                err);
}

// serviceSynProxy(proto, vip, port) -> {mode, threshold, cookiesSent, cookiesValid, cookiesInvalid: bigint}
Napi::Value ServiceSynProxy(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  ServiceKey k;
  if (!CheckArgs(info, 3) || !ServiceArgs(info, &k)) return env.Undefined();
  int mode = 0;
  uint32_t threshold = 0;
  uint64_t v[DP_SVC_SYN_MAX];
  int rc = dp_ctl_service_syn_proxy(k.proto, k.vaddr, k.vport, &mode, &threshold, v);
  if (rc < 0) return Result(env, rc, rc == -ENOENT ? "no such service" : "dataplane is not running");
  Napi::Object o = Napi::Object::New(env);
  o.Set("mode", mode);
  o.Set("threshold", threshold);
  for (int i = 0; i < DP_SVC_SYN_MAX; i++) o.Set(CamelCase(dp_svc_syn_names[i]), Napi::BigInt::New(env, v[i]));
  return o;
}

Napi::Value HalfOpen(const Napi::CallbackInfo &info) { return Napi::BigInt::New(info.Env(), dp_ctl_half_open()); }

Napi::Value SymmetricSet(const Napi::CallbackInfo &info) {
  uint8_t proto;
  bool on;
  if (!CheckArgs(info, 2) || !ToUint(info[0], "protocol", 0, 255, &proto) || !ToBool(info[1], "enabled", &on))
    return info.Env().Undefined();
  return Result(info.Env(), dp_ctl_symmetric_set(proto, on), "protocol must be TCP, UDP or ICMP");
}

Napi::Value SymmetricGet(const Napi::CallbackInfo &info) {
  uint8_t proto;
  if (!CheckArgs(info, 1) || !ToUint(info[0], "protocol", 0, 255, &proto)) return info.Env().Undefined();
  return Napi::Boolean::New(info.Env(), dp_ctl_symmetric_get(proto));
}

// struct dp_timeouts field by field, in its order.
const char *const kTimeoutNames[] = {"tcpSyn", "tcpEstablished", "tcpFin", "tcpClose", "udp", "icmp"};
static_assert(sizeof(dp_timeouts) == sizeof(uint32_t) * 6, "one name per dp_timeouts field");

Napi::Value TimeoutsSet(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o;
  if (!CheckArgs(info, 1) || !ToObject(info[0], "timeouts", &o)) return env.Undefined();
  struct dp_timeouts t;
  uint32_t *v = reinterpret_cast<uint32_t *>(&t);
  for (size_t i = 0; i < 6; i++)
    if (!ToU32(o.Get(kTimeoutNames[i]), std::string("timeouts.") + kTimeoutNames[i], 1, 7 * 86400, &v[i]))
      return env.Undefined();
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

Napi::Value ConnCount(const Napi::CallbackInfo &info) { return Napi::BigInt::New(info.Env(), dp_ctl_conn_count()); }

}  // namespace

void ExportTables(Napi::Env env, Napi::Object exports) {
  exports.Set("limits", Napi::Function::New(env, Limits));
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
  exports.Set("serviceSetRealDown", Napi::Function::New(env, ServiceSetRealDown));
  exports.Set("serviceSetLimits", Napi::Function::New(env, ServiceSetLimits));
  exports.Set("serviceSetCaddr", Napi::Function::New(env, ServiceSetCaddr));
  exports.Set("serviceDrops", Napi::Function::New(env, ServiceDrops));
  exports.Set("serviceSetSynProxy", Napi::Function::New(env, ServiceSetSynProxy));
  exports.Set("serviceSynProxy", Napi::Function::New(env, ServiceSynProxy));
  exports.Set("halfOpen", Napi::Function::New(env, HalfOpen));
  exports.Set("symmetricSet", Napi::Function::New(env, SymmetricSet));
  exports.Set("symmetricGet", Napi::Function::New(env, SymmetricGet));
  exports.Set("timeoutsSet", Napi::Function::New(env, TimeoutsSet));
  exports.Set("timeoutsGet", Napi::Function::New(env, TimeoutsGet));
  exports.Set("connCount", Napi::Function::New(env, ConnCount));
  exports.Set("servicesConnsTotal", Napi::Function::New(env, ServicesConnsTotal));
}

}  // namespace retrace_js
