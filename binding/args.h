// args.h — argument checks at the N-API boundary. Every buffer, length and id that crosses from
// JavaScript is validated here once; kernels behind this line trust their inputs.
#pragma once
#include <napi.h>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>

namespace hmb {

// Throws an Error whose message starts with "[CODE] "; lib/native.ts maps it to HiermemError.
[[noreturn]] inline void fail(Napi::Env env, const char* code, const std::string& msg) {
  throw Napi::Error::New(env, std::string("[") + code + "] " + msg);
}

// The product of `dims` as an element count. Fails with E_INVALID_ARGUMENT when it overflows or
// exceeds 2^53 (no buffer is that large): dims each in range can still multiply past int64, and a
// wrapped product would let a small buffer pass a length check for a huge loop.
inline int64_t elems(Napi::Env env, const char* what, std::initializer_list<int64_t> dims) {
  int64_t n = 1;
  for (int64_t d : dims)
    if (d < 0 || __builtin_mul_overflow(n, d, &n) || n > (INT64_C(1) << 53))
      fail(env, "E_INVALID_ARGUMENT", std::string(what) + ": the product of its dimensions is too large");
  return n;
}

// Physical RAM in bytes (0 if unknown).
inline double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
  return pages > 0 && size > 0 ? (double)pages * (double)size : 0;
}

// Refuses (E_CONFIG_INVALID, with the numbers) an allocation of `bytes` that exceeds physical RAM,
// before anything is allocated: a vector that large would be killed by the OOM killer while zeroing.
inline void check_fits_in_memory(Napi::Env env, const std::string& what, double bytes) {
  const double ram = physical_memory_bytes();
  if (ram > 0 && bytes > ram) {
    char buf[160];
    std::snprintf(buf, sizeof buf, " need %.3g GiB, more than this machine's %.3g GiB of RAM", bytes / 1073741824.0, ram / 1073741824.0);
    fail(env, "E_CONFIG_INVALID", what + buf);
  }
}

inline int64_t get_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi) {
  if (i >= info.Length() || !info[i].IsNumber()) fail(info.Env(), "E_INVALID_ARGUMENT", std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v != std::floor(v) || v < (double)lo || v > (double)hi)
    fail(info.Env(), "E_INVALID_ARGUMENT", std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " +
                                               std::to_string(hi) + "], got " + std::to_string(v));
  return (int64_t)v;
}

inline std::string get_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString()) fail(info.Env(), "E_INVALID_ARGUMENT", std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

inline double get_double(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) fail(info.Env(), "E_INVALID_ARGUMENT", std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v)) fail(info.Env(), "E_INVALID_ARGUMENT", std::string(name) + " must be finite");
  return v;
}

template <typename T>
struct TypedArrayKind;
template <>
struct TypedArrayKind<float> {
  static constexpr napi_typedarray_type type = napi_float32_array;
  static constexpr const char* name = "Float32Array";
};
template <>
struct TypedArrayKind<int32_t> {
  static constexpr napi_typedarray_type type = napi_int32_array;
  static constexpr const char* name = "Int32Array";
};
template <>
struct TypedArrayKind<double> {
  static constexpr napi_typedarray_type type = napi_float64_array;
  static constexpr const char* name = "Float64Array";
};

// A typed array of element type T and exactly `expected` elements (or any length if expected < 0).
template <typename T>
T* get_array(Napi::Value v, Napi::Env env, const char* name, int64_t expected, int64_t* length_out = nullptr) {
  if (!v.IsTypedArray()) fail(env, "E_INVALID_ARGUMENT", std::string(name) + " must be a " + TypedArrayKind<T>::name);
  auto ta = v.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != TypedArrayKind<T>::type)
    fail(env, "E_INVALID_ARGUMENT", std::string(name) + " must be a " + TypedArrayKind<T>::name);
  auto ab = ta.ArrayBuffer();
  if (ab.IsDetached()) fail(env, "E_INVALID_ARGUMENT", std::string(name) + " is detached");
  int64_t len = (int64_t)ta.ElementLength();
  if (expected >= 0 && len != expected)
    fail(env, "E_SHAPE_MISMATCH", std::string(name) + " has " + std::to_string(len) + " elements, expected " +
                                      std::to_string(expected));
  if (length_out) *length_out = len;
  if (len == 0) return nullptr;
  return reinterpret_cast<T*>(static_cast<uint8_t*>(ab.Data()) + ta.ByteOffset());
}

template <typename T>
T* get_array(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t expected) {
  if (i >= info.Length()) fail(info.Env(), "E_INVALID_ARGUMENT", std::string(name) + " is missing");
  return get_array<T>(info[i], info.Env(), name, expected);
}

// Same, but null/undefined allowed (returns nullptr).
template <typename T>
T* get_optional_array(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t expected) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return get_array<T>(info, i, name, expected);
}

inline void check_tokens(Napi::Env env, const char* name, const int32_t* t, int64_t n, int64_t V, bool allow_ignore) {
  for (int64_t i = 0; i < n; i++) {
    if (t[i] >= V || t[i] < (allow_ignore ? -1 : 0))
      fail(env, "E_TOKEN_OUT_OF_RANGE", std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(t[i]) +
                                            " is outside [" + (allow_ignore ? "-1" : "0") + ", " + std::to_string(V) + ")");
  }
}

// doc_start (B,T): 0 <= ds[t] <= t within each row, and non-decreasing document starts.
inline void check_doc_start(Napi::Env env, const int32_t* ds, int64_t B, int64_t T) {
  if (!ds) return;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      int32_t s = ds[b * T + t];
      bool ok = s >= 0 && s <= t && (t == 0 || s == ds[b * T + t - 1] || s == t);
      if (!ok)
        fail(env, "E_INVALID_ARGUMENT", "docStart[" + std::to_string(b * T + t) + "] = " + std::to_string(s) +
                                            " is invalid (need 0 <= docStart[t] <= t, and each position either continues "
                                            "the previous document or starts a new one at t)");
    }
}

}  // namespace hmb
