// 16-byte vectors of 8 half-precision values and their fp32 conversions. Kernels load and store
// whole vectors (one LDG.128/STG.128) along head_dim and do all arithmetic in fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace bastion::cuda {

constexpr int kVecElems = 8;  // 16 bytes of a 2-byte type

template <typename T>
struct Half2Of;
template <>
struct Half2Of<__half> {
  using type = __half2;
  static __device__ __forceinline__ float2 to_float2(type v) { return __half22float2(v); }
  static __device__ __forceinline__ type from_float2(float2 v) { return __float22half2_rn(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};
template <>
struct Half2Of<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ float2 to_float2(type v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ type from_float2(float2 v) { return __float22bfloat162_rn(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};

// The 8 values of a 16-byte vector of T as floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&out)[kVecElems]) {
  using H2 = Half2Of<T>;
  const auto* pairs = reinterpret_cast<const typename H2::type*>(&raw);
#pragma unroll
  for (int i = 0; i < kVecElems / 2; ++i) {
    const float2 f = H2::to_float2(pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// 8 floats rounded to T and packed into one 16-byte vector.
template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&in)[kVecElems]) {
  using H2 = Half2Of<T>;
  uint4 raw;
  auto* pairs = reinterpret_cast<typename H2::type*>(&raw);
#pragma unroll
  for (int i = 0; i < kVecElems / 2; ++i) pairs[i] = H2::from_float2(make_float2(in[2 * i], in[2 * i + 1]));
  return raw;
}

// 16-byte load marked evict-first (ld.global.cs): each KV row is read exactly once per CTA, so
// keeping it in cache would only push out the block table and q.
__device__ __forceinline__ uint4 load_stream(const void* ptr) {
  return __ldcs(reinterpret_cast<const uint4*>(ptr));
}

}  // namespace bastion::cuda
