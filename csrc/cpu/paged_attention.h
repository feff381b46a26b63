// CPU paged attention over NHD caches [num_blocks, block_size, num_kv_heads, head_dim] (fp32):
// varlen batches mixing prefill and decode, causal, GQA, optional sliding window.
#pragma once

#include <cstdint>

namespace bastion::cpu {

// One paged cache tensor; head_dim is contiguous, the other strides are in elements.
// One of the K/V caches: fp32, or fp16 (IEEE half bits) when `fp16`; strides in elements.
struct PagedCache {
  const void* data;
  int64_t block_stride;
  int64_t slot_stride;
  int64_t head_stride;
  bool fp16 = false;

  // Element e of the cache as the element type the kernels read (float or uint16_t half bits).
  template <typename T>
  const T* at(int64_t e) const {
    return static_cast<const T*>(data) + e;
  }
};

struct PagedAttentionArgs {
  const float* q;           // [num_tokens, num_heads, head_dim], head_dim contiguous
  int64_t q_token_stride;
  int64_t q_head_stride;
  float* out;               // same layout as q
  int64_t out_token_stride;
  int64_t out_head_stride;
  PagedCache k;
  PagedCache v;
  const int32_t* block_table;  // [num_seqs, max_blocks_per_seq]
  int64_t block_table_stride;
  const int32_t* seq_lens;     // [num_seqs] tokens in the cache, including this step's
  const int32_t* cu_seqlens_q; // [num_seqs + 1]
  int64_t num_tokens;
  int num_seqs;
  int num_heads;
  int num_kv_heads;
  int head_dim;
  int block_size;
  int max_blocks_per_seq;
  int64_t num_blocks;
  float scale;
  int sliding_window;  // <= 0: unlimited
};

// Throws std::invalid_argument (before touching `out`) when the metadata is inconsistent.
void paged_attention(const PagedAttentionArgs& args, int num_threads);

}  // namespace bastion::cpu
