// binding.h: what the binding's files share. The binding only marshals:
// it checks argument counts and types (TypeError) and ranges (RangeError),
// converts -errno into an Error with a string `code` ("EINVAL", "ENODEV",
// ...), passes 64-bit values as BigInt. All logic lives in the C files
// behind dp.h; src/dataplane/binding.ts is the only module that loads the
// addon.
//
// Argument helpers: one family. Each reads one JS value (a positional
// argument, info[i], or an object property, o.Get(key)) under a name that
// error messages show ("plen", "conf.ports[0].mtu"), returns false with a
// pending JS exception on bad input, and writes the C value otherwise.
#ifndef RETRACE_BINDING_H
#define RETRACE_BINDING_H

#include <napi.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <arpa/inet.h>

namespace retrace_js {

inline Napi::Error ErrnoError(Napi::Env env, int neg_errno, const std::string &msg) {
  int e = neg_errno < 0 ? -neg_errno : neg_errno;
  const char *name = strerrorname_np(e);
  Napi::Error err = Napi::Error::New(env, msg.empty() ? std::string(strerror(e)) : msg);
  err.Set("code", Napi::String::New(env, name ? name : "EIO"));
  err.Set("errno", Napi::Number::New(env, -e));
  return err;
}

// A dp_* return value as a JS result: undefined, or a thrown ErrnoError.
inline Napi::Value Result(Napi::Env env, int ret, const char *err) {
  if (ret < 0) ErrnoError(env, ret, err).ThrowAsJavaScriptException();
  return env.Undefined();
}

inline bool TypeFail(Napi::Env env, const std::string &msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return false;
}

inline bool RangeFail(Napi::Env env, const std::string &msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
  return false;
}

inline bool CheckArgs(const Napi::CallbackInfo &info, size_t n) {
  if (info.Length() != n) return TypeFail(info.Env(), "expected " + std::to_string(n) + " argument(s)");
  return true;
}

// ---- the argument helpers ----

inline bool ToU32(Napi::Value v, const std::string &name, uint32_t min, uint32_t max, uint32_t *out) {
  if (!v.IsNumber()) return TypeFail(v.Env(), name + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < min || d > max || d != static_cast<double>(static_cast<uint32_t>(d)))
    return RangeFail(v.Env(), name + " must be an integer in " + std::to_string(min) + ".." + std::to_string(max));
  *out = static_cast<uint32_t>(d);
  return true;
}

// Any integer type narrower than 32 bits, range-checked into it.
template <typename T>
inline bool ToUint(Napi::Value v, const std::string &name, uint32_t min, uint32_t max, T *out) {
  uint32_t u;
  if (!ToU32(v, name, min, max, &u)) return false;
  *out = static_cast<T>(u);
  return true;
}

inline bool ToBool(Napi::Value v, const std::string &name, bool *out) {
  if (!v.IsBoolean()) return TypeFail(v.Env(), name + " must be a boolean");
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

inline bool ToObject(Napi::Value v, const std::string &name, Napi::Object *out) {
  if (!v.IsObject()) return TypeFail(v.Env(), name + " must be an object");
  *out = v.As<Napi::Object>();
  return true;
}

inline bool ToArray(Napi::Value v, const std::string &name, Napi::Array *out) {
  if (!v.IsArray()) return TypeFail(v.Env(), name + " must be an array");
  *out = v.As<Napi::Array>();
  return true;
}

inline bool ToString(Napi::Value v, const std::string &name, std::string *out) {
  if (!v.IsString()) return TypeFail(v.Env(), name + " must be a string");
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}

// A string of 1..len-1 bytes into a fixed C buffer.
inline bool ToCString(Napi::Value v, const std::string &name, char *out, size_t len) {
  std::string s;
  if (!ToString(v, name, &s)) return false;
  if (s.empty() || s.size() >= len)
    return RangeFail(v.Env(), name + " must be 1.." + std::to_string(len - 1) + " characters");
  memcpy(out, s.c_str(), s.size() + 1);
  return true;
}

// Dotted IPv4 into network order. any_empty: "" means 0 (any / none).
inline bool ToIp(Napi::Value v, const std::string &name, bool any_empty, uint32_t *out) {
  std::string s;
  if (!ToString(v, name, &s)) return false;
  if (s.empty() && any_empty) {
    *out = 0;
    return true;
  }
  struct in_addr a;
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return TypeFail(v.Env(), name + " is not an IPv4 address");
  *out = a.s_addr;
  return true;
}

// "aa:bb:cc:dd:ee:ff" (hex digits, either case) into 6 bytes.
inline bool ToMac(Napi::Value v, const std::string &name, uint8_t out[6]) {
  std::string s;
  if (!ToString(v, name, &s)) return false;
  unsigned b[6];
  if (sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
    return TypeFail(v.Env(), name + " must look like aa:bb:cc:dd:ee:ff");
  for (int k = 0; k < 6; k++) out[k] = static_cast<uint8_t>(b[k]);
  return true;
}

// ---- C values as JS values ----

inline std::string MacString(const uint8_t mac[6]) {
  char buf[18];
  snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
  return buf;
}

inline std::string IpString(uint32_t be) {
  char buf[INET_ADDRSTRLEN];
  struct in_addr a;
  a.s_addr = be;
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

inline Napi::Array Strings(Napi::Env env, const char *const *names, size_t n) {
  Napi::Array a = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; i++) a.Set(static_cast<uint32_t>(i), names[i]);
  return a;
}

// packets_to_real -> packetsToReal: the JS names of the dataplane's counters.
inline std::string CamelCase(const char *snake) {
  std::string out;
  for (const char *p = snake; *p; p++) {
    if (*p == '_' && p[1] != '\0')
      out += static_cast<char>(toupper(static_cast<unsigned char>(*++p)));
    else
      out += *p;
  }
  return out;
}

// ---- the exports of each file, set by Init in binding.cc ----

void ExportTables(Napi::Env env, Napi::Object exports);  // binding_tables.cc
void ExportConns(Napi::Env env, Napi::Object exports);   // binding_conns.cc

}  // namespace retrace_js

#endif
