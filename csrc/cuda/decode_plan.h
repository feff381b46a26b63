// Work split for paged decode attention: plain host arithmetic, no CUDA headers, so the Python
// bindings can expose it (and CPU tests can check it) in builds with or without CUDA. The CUDA
// launcher recomputes the same plan from its arguments, so caller and kernel never disagree.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <limits.h>

// One CTA serves up to this many query heads of one KV head (the register tile is sized by it).
#define BASTION_DECODE_MAX_GROUP 8
// Split-KV never cuts a sequence into pieces shorter than this: below it the merge costs more than
// the extra parallelism returns.
#define BASTION_DECODE_MIN_SPLIT_TOKENS 256
#define BASTION_DECODE_MAX_SPLITS 64
// Aim for this many CTAs per SM before splitting stops paying (several CTAs are resident per SM,
// so one "wave" of single-CTA SMs would leave most of the memory system idle).
#define BASTION_DECODE_TARGET_CTAS_PER_SM 2

typedef struct BastionDecodePlan {
  int32_t max_group;       // query heads per CTA tile: 1, 2, 4 or 8 (template parameter)
  int32_t head_chunks;     // CTAs per KV head (> 1 only when group > BASTION_DECODE_MAX_GROUP)
  int32_t num_splits;      // CTAs along the context (1 = no split-KV, no merge kernel)
  int32_t split_tokens;    // context tokens per split
  size_t workspace_bytes;  // fp32 partial outputs + LSEs the merge reads; 0 when num_splits == 1
} BastionDecodePlan;

// Smallest tile of {1, 2, 4, 8} query heads that holds `group` (capped at the maximum).
static inline int32_t bastion_decode_max_group(int32_t group) {
  int32_t tile = 1;
  while (tile < group && tile < BASTION_DECODE_MAX_GROUP) tile *= 2;
  return tile;
}

static inline int64_t bastion_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// NULL when the shapes describe a decode launch the kernels support, else what is wrong.
static inline const char* bastion_check_decode_shape(int32_t num_seqs, int32_t num_heads, int32_t num_kv_heads,
                                                     int32_t head_dim, int32_t block_size,
                                                     int32_t max_blocks_per_seq, int32_t sliding_window,
                                                     int32_t num_sms) {
  if (num_seqs < 0) return "paged_attention: num_seqs must be >= 0";
  if (num_seqs > 65535) return "paged_attention: num_seqs must be <= 65535 (CUDA grid y limit)";
  if (num_heads < 1 || num_kv_heads < 1) return "paged_attention: num_heads and num_kv_heads must be >= 1";
  if (num_heads % num_kv_heads != 0) return "paged_attention: num_heads must be a multiple of num_kv_heads";
  if (head_dim != 64 && head_dim != 128) return "paged_attention: head_dim must be 64 or 128";
  if (block_size < 1 || max_blocks_per_seq < 1)
    return "paged_attention: block_size and max_blocks_per_seq must be >= 1";
  if (sliding_window < 0) return "paged_attention: sliding_window must be >= 0 (0 = no window)";
  if (num_sms < 1) return "paged_attention: num_sms must be >= 1";
  return NULL;
}

// Upper bound on the tokens any sequence attends to: the block table's capacity, or the sliding
// window when smaller. It is known on the host without reading seq_lens from the device, so the
// plan depends only on shapes and is stable under CUDA graph capture.
static inline int32_t bastion_decode_max_context(int32_t max_blocks_per_seq, int32_t block_size,
                                                 int32_t sliding_window) {
  const int64_t table_tokens = (int64_t)max_blocks_per_seq * block_size;
  const int64_t bound = sliding_window > 0 && sliding_window < table_tokens ? sliding_window : table_tokens;
  if (bound < 1) return 1;  // an empty table still launches one (empty) split
  return bound > INT32_MAX ? INT32_MAX : (int32_t)bound;
}

// Splits the context only while the grid is too small to fill the GPU, and never below
// BASTION_DECODE_MIN_SPLIT_TOKENS per split. Shapes must pass bastion_check_decode_shape.
static inline BastionDecodePlan bastion_plan_paged_decode(int32_t num_seqs, int32_t num_heads,
                                                          int32_t num_kv_heads, int32_t head_dim,
                                                          int32_t max_context, int32_t num_sms) {
  BastionDecodePlan plan;
  if (max_context < 1) max_context = 1;
  const int32_t group = num_heads / num_kv_heads;
  plan.max_group = bastion_decode_max_group(group);
  plan.head_chunks = (int32_t)bastion_ceil_div(group, plan.max_group);

  const int64_t ctas = (int64_t)(num_seqs > 0 ? num_seqs : 1) * num_kv_heads * plan.head_chunks;
  const int64_t wanted = bastion_ceil_div((int64_t)num_sms * BASTION_DECODE_TARGET_CTAS_PER_SM, ctas);
  const int64_t by_length = max_context / BASTION_DECODE_MIN_SPLIT_TOKENS;  // floor: splits stay >= the minimum
  int64_t splits = wanted < by_length ? wanted : by_length;
  if (splits > BASTION_DECODE_MAX_SPLITS) splits = BASTION_DECODE_MAX_SPLITS;
  if (splits < 1) splits = 1;

  plan.split_tokens = (int32_t)bastion_ceil_div(max_context, splits);
  // Re-derive the count from the rounded split length so no split starts past max_context.
  plan.num_splits = (int32_t)bastion_ceil_div(max_context, plan.split_tokens);
  plan.workspace_bytes = plan.num_splits > 1 ? (size_t)num_seqs * (size_t)num_heads *
                                                   (size_t)plan.num_splits * (size_t)(head_dim + 1) *
                                                   sizeof(float)
                                             : 0;
  return plan;
}
