// Per-thread state of a CPU paged-attention work item, shared by the tile kernel that drives every
// item (paged_attention.cpp) and the single-token decode path it hands decode items to
// (attention_decode.cpp). Internal to those two files: not part of the paged_attention.h API.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/attention_microkernels.h"
#include "cpu/attention_plan.h"
#include "cpu/paged_attention.h"

namespace bastion::cpu {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Keys a decode item scores before one softmax update: long enough that the max/exp/rescale run
// once per span rather than once per 32 keys, short enough that the span's scores (num_heads rows)
// and its V rows prefetched during the K pass stay in L2.
constexpr int kDecodeSpan = 256;

// Per-thread scratch, sized once per call for the largest tile.
struct TileScratch {
  std::vector<float> q;       // [rows, head_dim], pre-multiplied by the softmax scale
  std::vector<float> acc;     // [rows, head_dim] running sum of p * V
  std::vector<float> scores;  // [rows, kKvChunk]
  std::vector<float> keys_t;  // [head_dim, kKvChunk] transposed key chunk (tiles of many rows)
  std::vector<float> row_max;
  std::vector<float> row_sum;
  std::vector<int64_t> row_first_key;  // visible key range of each row: [first, last]
  std::vector<int64_t> row_last_key;
  std::vector<float> span_scores;  // [num_heads, kDecodeSpan] scores of a decode span

  explicit TileScratch(int max_rows, int head_dim, int num_heads)
      : q(static_cast<size_t>(max_rows) * head_dim), acc(q.size()), scores(static_cast<size_t>(max_rows) * kKvChunk),
        keys_t(static_cast<size_t>(head_dim) * kKvChunk), row_max(max_rows), row_sum(max_rows), row_first_key(max_rows), row_last_key(max_rows),
        span_scores(static_cast<size_t>(num_heads) * kDecodeSpan) {}
};

// Partial-result slot layout: num_heads rows of head_dim floats, and num_heads LSEs.
struct PartialBuffer {
  std::vector<float> out;
  std::vector<float> lse;
};

// Runs a single-token item over all kv heads (rows = q heads, every key visible) into s.acc,
// s.row_max and s.row_sum; the item's queries must already be loaded into `s` (scaled, rows reset).
// T is the caches' element type (float, or uint16_t for fp16); instantiated for both in attention_decode.cpp.
template <typename T>
void run_decode_item(const PagedAttentionArgs& a, const AttentionWorkItem& item, TileScratch& s);

// Writes the output of the decode sequence `m` from the partial results of its KV splits.
void merge_splits(const PagedAttentionArgs& a, const AttentionMerge& m, const PartialBuffer& partials);

}  // namespace bastion::cpu
