// KV-cache write (reshape_and_cache): copies each token's K and V rows into its slot of the paged
// caches [num_blocks, block_size, num_kv_heads, head_dim]; slot -1 marks a padded token to skip.
#pragma once

#include <cstdint>

namespace bastion::cpu {

// A [tokens-or-blocks, ...] fp32 tensor described by its data pointer and element strides.
// One of the K/V caches: fp32, or fp16 (IEEE half bits, rounded to nearest even) when `fp16`.
struct KvWriteTarget {
  void* data;
  int64_t block_stride;
  int64_t slot_stride;
  int64_t head_stride;
  bool fp16 = false;
};

struct KvWriteArgs {
  const float* key;  // [num_tokens, num_kv_heads, head_dim], head_dim contiguous
  int64_t key_token_stride;
  int64_t key_head_stride;
  const float* value;
  int64_t value_token_stride;
  int64_t value_head_stride;
  KvWriteTarget k_cache;
  KvWriteTarget v_cache;
  const int64_t* slot_mapping;  // [num_tokens]
  int64_t num_tokens;
  int num_kv_heads;
  int head_dim;
  int block_size;
  int64_t num_blocks;
};

// Throws std::invalid_argument (before writing anything) if a slot is outside the cache.
void reshape_and_cache(const KvWriteArgs& args, int num_threads);

}  // namespace bastion::cpu
