// Tile kernel: the query rows of one work item (tokens of a query tile x the q heads of its kv
// heads) stream over their KV range in chunks with an online softmax, so every K/V row loaded from
// the cache is used by all q heads of its group. See attention_plan.h for how items are formed;
// single-token decode items and the merge of their splits are in attention_decode.cpp.
#include "cpu/paged_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/attention_microkernels.h"
#include "cpu/attention_plan.h"
#include "cpu/attention_tile.h"
#include "cpu/attention_validate.h"
#include "cpu/vec_math.h"

namespace bastion::cpu {

namespace {

// Dot products one extra thread must get to pay for waking it (~60 us of work at D=64): tiny
// decode batches run on one thread instead of paying a fork/join.
constexpr int64_t kMinCostPerThread = 4096;

int heads_per_token(const PagedAttentionArgs& a, const AttentionWorkItem& item) {
  return (item.kv_head_end - item.kv_head_begin) * (a.num_heads / a.num_kv_heads);
}

// Loads the item's query rows (row = token * heads_per_token + q head - first q head) and their
// visible key ranges.
int load_queries(const PagedAttentionArgs& a, const AttentionWorkItem& item, TileScratch& s) {
  const int group = a.num_heads / a.num_kv_heads;
  const int row_heads = heads_per_token(a, item);
  const int64_t first_token = a.cu_seqlens_q[item.seq];
  const int64_t num_queries = a.cu_seqlens_q[item.seq + 1] - first_token;
  const int64_t seq_len = a.seq_lens[item.seq];
  int row = 0;
  for (int64_t j = item.q_begin; j < item.q_end; ++j) {
    const int64_t pos = seq_len - num_queries + j;
    for (int hq = 0; hq < row_heads; ++hq, ++row) {
      const int head = item.kv_head_begin * group + hq;
      const float* src = a.q + (first_token + j) * a.q_token_stride + head * a.q_head_stride;
      float* dst = s.q.data() + static_cast<int64_t>(row) * a.head_dim;
      for (int d = 0; d < a.head_dim; ++d) dst[d] = src[d] * a.scale;
      s.row_last_key[row] = std::min(pos, item.kv_end - 1);
      s.row_first_key[row] = std::max(item.kv_begin, a.sliding_window > 0 ? pos - a.sliding_window + 1 : 0);
      s.row_max[row] = kNegInf;
      s.row_sum[row] = 0.0f;
    }
  }
  std::fill(s.acc.begin(), s.acc.begin() + static_cast<int64_t>(row) * a.head_dim, 0.0f);
  return row;
}

// Addresses of the K and V rows of keys [kv0, kv0 + n) of one kv head, through the block table.
template <typename T>
void locate_rows(const PagedAttentionArgs& a, const int32_t* block_row, int kv_head, int64_t kv0, int n,
                 const T** k_rows, const T** v_rows) {
  for (int t = 0; t < n; ++t) {
    const int64_t pos = kv0 + t;
    const int64_t page = block_row[pos / a.block_size];
    const int64_t slot = pos % a.block_size;
    k_rows[t] = a.k.at<T>(page * a.k.block_stride + slot * a.k.slot_stride + kv_head * a.k.head_stride);
    v_rows[t] = a.v.at<T>(page * a.v.block_stride + slot * a.v.slot_stride + kv_head * a.v.head_stride);
  }
}

// One online-softmax step over keys [kv0, kv0 + n) of kv head `kv_head`, for query rows
// [first_row, first_row + rows) (those of that kv head's group).
template <typename T>
void process_chunk(const PagedAttentionArgs& a, const int32_t* block_row, int kv_head, int64_t kv0, int n,
                   int first_row, int rows, TileScratch& s) {
  const int D = a.head_dim;
  float* const q = s.q.data() + static_cast<int64_t>(first_row) * D;
  float* const acc = s.acc.data() + static_cast<int64_t>(first_row) * D;
  float* const scores = s.scores.data() + static_cast<int64_t>(first_row) * kKvChunk;
  const T* k_rows[kKvChunk];
  const T* v_rows[kKvChunk];
  locate_rows<T>(a, block_row, kv_head, kv0, n, k_rows, v_rows);
  if (rows >= kTransposeMinRows) {
    transpose_keys(k_rows, n, D, s.keys_t.data());
    int r = 0;
    for (; r + 2 <= rows; r += 2) scores_transposed<2>(q + r * D, s.keys_t.data(), D, scores + r * kKvChunk);
    if (r < rows) scores_transposed<1>(q + r * D, s.keys_t.data(), D, scores + r * kKvChunk);
  } else {
    for (int t = 0; t < n; ++t) {
      for (int r = 0; r < rows; ++r) scores[r * kKvChunk + t] = dot(q + r * D, k_rows[t], D);
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* p = scores + r * kKvChunk;
    const int row = first_row + r;
    // Mask keys outside the row's causal/window range (only the chunk's edges can be affected).
    const int lo = static_cast<int>(std::clamp<int64_t>(s.row_first_key[row] - kv0, 0, n));
    const int hi = static_cast<int>(std::clamp<int64_t>(s.row_last_key[row] - kv0 + 1, 0, n));
    if (lo >= hi) {
      std::fill(p, p + n, 0.0f);
      continue;
    }
    std::fill(p, p + lo, kNegInf);
    std::fill(p + hi, p + n, kNegInf);
    const float chunk_max = *std::max_element(p + lo, p + hi);
    const float new_max = std::max(s.row_max[row], chunk_max);
    if (new_max > s.row_max[row] && s.row_sum[row] > 0.0f) {
      const float rescale = std::exp(s.row_max[row] - new_max);
      s.row_sum[row] *= rescale;
      scale_row(acc + r * D, rescale, D);
    }
    s.row_max[row] = new_max;
    s.row_sum[row] += exp_shift_sum(p, new_max, n);
  }
  int r = 0;
  for (; r + 3 <= rows; r += 3) {  // 3 rows x 4 accumulators + 4 V registers fit the 16 ymm registers
    accumulate_pv<3>(acc + r * D, scores + r * kKvChunk, v_rows, n, D);
  }
  for (; r < rows; ++r) accumulate_pv<1>(acc + r * D, scores + r * kKvChunk, v_rows, n, D);
}

template <typename T>
void run_item(const PagedAttentionArgs& a, const AttentionWorkItem& item, TileScratch& s, PartialBuffer& partials) {
  const int rows = load_queries(a, item, s);
  const int group = a.num_heads / a.num_kv_heads;
  const int32_t* block_row = a.block_table + item.seq * a.block_table_stride;
  const bool one_head = item.kv_head_end - item.kv_head_begin == 1;
  const bool decode = item.q_end - item.q_begin == 1 && item.kv_head_begin == 0 && item.kv_head_end == a.num_kv_heads;
  if (decode) run_decode_item<T>(a, item, s);
  for (int64_t kv0 = item.kv_begin; !decode && kv0 < item.kv_end; kv0 += kKvChunk) {
    const int n = static_cast<int>(std::min<int64_t>(kKvChunk, item.kv_end - kv0));
    // Heads innermost: a multi-head (decode) item reads each slot's rows of all heads together.
    for (int h = item.kv_head_begin; h < item.kv_head_end; ++h) {
      const int first_row = one_head ? 0 : (h - item.kv_head_begin) * group;
      process_chunk<T>(a, block_row, h, kv0, n, first_row, one_head ? rows : group, s);
    }
  }
  const int row_heads = heads_per_token(a, item);
  for (int r = 0; r < rows; ++r) {
    const float inv_sum = s.row_sum[r] > 0.0f ? 1.0f / s.row_sum[r] : 0.0f;
    const float* acc = s.acc.data() + static_cast<int64_t>(r) * a.head_dim;
    const int head = item.kv_head_begin * group + r % row_heads;
    float* dst;
    if (item.partial >= 0) {  // decode split: every q head is in the item, so row r is head r
      dst = partials.out.data() + (item.partial * a.num_heads + r) * a.head_dim;
      partials.lse[item.partial * a.num_heads + r] =
          s.row_sum[r] > 0.0f ? s.row_max[r] + std::log(s.row_sum[r]) : kNegInf;
    } else {
      const int64_t token = a.cu_seqlens_q[item.seq] + item.q_begin + r / row_heads;
      dst = a.out + token * a.out_token_stride + head * a.out_head_stride;
    }
    for (int d = 0; d < a.head_dim; ++d) dst[d] = acc[d] * inv_sum;
  }
}

}  // namespace

void paged_attention(const PagedAttentionArgs& args, int num_threads) {
  validate_attention_args(args);
  num_threads = std::max(1, num_threads);
  AttentionPlanOptions options;
  options.num_threads = num_threads;
  const int group = args.num_heads / args.num_kv_heads;
  const AttentionPlan plan = plan_attention(args.seq_lens, args.cu_seqlens_q, args.num_seqs, args.num_kv_heads, group,
                                            args.sliding_window, options);
  PartialBuffer partials;
  partials.out.resize(static_cast<size_t>(plan.num_partials) * args.num_heads * args.head_dim);
  partials.lse.resize(static_cast<size_t>(plan.num_partials) * args.num_heads);
  const int max_rows = std::max(args.num_heads, options.q_tile_rows / group * group);
  const int64_t num_items = static_cast<int64_t>(plan.items.size());
  const int64_t useful_threads = std::min<int64_t>(num_items, plan.total_cost / kMinCostPerThread);
  const int threads = static_cast<int>(std::clamp<int64_t>(useful_threads, 1, num_threads));
#pragma omp parallel num_threads(threads)
  {
    TileScratch scratch(max_rows, args.head_dim, args.num_heads);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < num_items; ++i) {
      if (args.k.fp16) {
        run_item<uint16_t>(args, plan.items[i], scratch, partials);
      } else {
        run_item<float>(args, plan.items[i], scratch, partials);
      }
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(plan.merges.size()); ++i) merge_splits(args, plan.merges[i], partials);
  }
}

}  // namespace bastion::cpu
