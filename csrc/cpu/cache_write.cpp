#include "cpu/cache_write.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace bastion::cpu {

namespace {

void to_half(const float* src, uint16_t* dst, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

void copy_token(const float* src, int64_t src_head_stride, const KvWriteTarget& dst, int64_t block, int64_t offset,
                int num_kv_heads, int head_dim) {
  const int64_t first = block * dst.block_stride + offset * dst.slot_stride;
  for (int h = 0; h < num_kv_heads; ++h) {
    const float* row = src + h * src_head_stride;
    if (dst.fp16) {
      to_half(row, static_cast<uint16_t*>(dst.data) + first + h * dst.head_stride, head_dim);
    } else {
      std::memcpy(static_cast<float*>(dst.data) + first + h * dst.head_stride, row, sizeof(float) * head_dim);
    }
  }
}

}  // namespace

void reshape_and_cache(const KvWriteArgs& a, int num_threads) {
  const int64_t num_slots = a.num_blocks * a.block_size;
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    if (a.slot_mapping[t] < -1 || a.slot_mapping[t] >= num_slots) {
      throw std::invalid_argument("reshape_and_cache: slot_mapping[" + std::to_string(t) + "] = " +
                                  std::to_string(a.slot_mapping[t]) + " is outside the cache's " +
                                  std::to_string(num_slots) + " slots (use -1 to skip a token)");
    }
  }
  // A token's rows are small (a few KiB): only long prefills are worth more than one thread.
  const int threads = a.num_tokens >= 256 ? std::max(1, num_threads) : 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int64_t slot = a.slot_mapping[t];
    if (slot < 0) continue;
    const int64_t block = slot / a.block_size;
    const int64_t offset = slot % a.block_size;
    copy_token(a.key + t * a.key_token_stride, a.key_head_stride, a.k_cache, block, offset, a.num_kv_heads, a.head_dim);
    copy_token(a.value + t * a.value_token_stride, a.value_head_stride, a.v_cache, block, offset, a.num_kv_heads,
               a.head_dim);
  }
}

}  // namespace bastion::cpu
