#include "cpu/cache_write.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace bastion::cpu {

namespace {

void copy_token(const float* src, int64_t src_head_stride, const KvWriteTarget& dst, int64_t block, int64_t offset,
                int num_kv_heads, int head_dim) {
  float* base = dst.data + block * dst.block_stride + offset * dst.slot_stride;
  for (int h = 0; h < num_kv_heads; ++h) {
    std::memcpy(base + h * dst.head_stride, src + h * src_head_stride, sizeof(float) * head_dim);
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
