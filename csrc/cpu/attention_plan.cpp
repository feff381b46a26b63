#include "cpu/attention_plan.h"

#include <algorithm>

namespace bastion::cpu {

namespace {

// Key range [begin, end) seen by queries [q_begin, q_end) of a sequence with `num_queries`
// queries and `seq_len` cached tokens (queries are the last tokens: causal + optional window).
void key_range(int64_t seq_len, int64_t num_queries, int64_t q_begin, int64_t q_end, int sliding_window,
               int64_t* begin, int64_t* end) {
  const int64_t first_pos = seq_len - num_queries + q_begin;
  const int64_t last_pos = seq_len - num_queries + q_end - 1;
  *begin = sliding_window > 0 ? std::max<int64_t>(0, first_pos - sliding_window + 1) : 0;
  *end = last_pos + 1;
}

}  // namespace

AttentionPlan plan_attention(const int32_t* seq_lens, const int32_t* cu_seqlens_q, int num_seqs,
                             int num_kv_heads, int group_size, int sliding_window,
                             const AttentionPlanOptions& options) {
  AttentionPlan plan;
  const int q_tile_tokens = std::max(1, options.q_tile_rows / std::max(1, group_size));
  int64_t base_items = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int64_t num_queries = cu_seqlens_q[s + 1] - cu_seqlens_q[s];
    base_items += num_queries == 1 ? 1 : num_kv_heads * ((num_queries + q_tile_tokens - 1) / q_tile_tokens);
  }
  // How many ways to split each single-token decode so that the batch yields enough items.
  const int64_t wanted_items = static_cast<int64_t>(options.num_threads) * options.items_per_thread;
  const int64_t split_factor =
      (options.num_threads > 1 && base_items > 0 && base_items < wanted_items)
          ? (wanted_items + base_items - 1) / base_items
          : 1;

  for (int s = 0; s < num_seqs; ++s) {
    const int64_t num_queries = cu_seqlens_q[s + 1] - cu_seqlens_q[s];
    if (num_queries == 1) {
      int64_t kv_begin = 0, kv_end = 0;
      key_range(seq_lens[s], 1, 0, 1, sliding_window, &kv_begin, &kv_end);
      const int64_t kv_len = kv_end - kv_begin;
      const int64_t splits = std::min(split_factor, std::max<int64_t>(1, kv_len / options.min_split_tokens));
      if (splits == 1) {
        plan.items.push_back({s, 0, num_kv_heads, 0, 1, kv_begin, kv_end, -1});
        continue;
      }
      plan.merges.push_back({s, plan.num_partials, static_cast<int32_t>(splits)});
      for (int64_t i = 0; i < splits; ++i) {
        const int64_t b = kv_begin + kv_len * i / splits;
        const int64_t e = kv_begin + kv_len * (i + 1) / splits;
        plan.items.push_back({s, 0, num_kv_heads, 0, 1, b, e, plan.num_partials++});
      }
      continue;
    }
    for (int64_t q0 = 0; q0 < num_queries; q0 += q_tile_tokens) {
      const int64_t q1 = std::min<int64_t>(num_queries, q0 + q_tile_tokens);
      int64_t kv_begin = 0, kv_end = 0;
      key_range(seq_lens[s], num_queries, q0, q1, sliding_window, &kv_begin, &kv_end);
      for (int h = 0; h < num_kv_heads; ++h) {
        plan.items.push_back({s, h, h + 1, static_cast<int32_t>(q0), static_cast<int32_t>(q1), kv_begin, kv_end, -1});
      }
    }
  }
  const auto cost = [group_size](const AttentionWorkItem& it) {
    return (it.kv_end - it.kv_begin) * (it.q_end - it.q_begin) * (it.kv_head_end - it.kv_head_begin) * group_size;
  };
  for (const AttentionWorkItem& it : plan.items) plan.total_cost += cost(it);
  // Longest first: with dynamic scheduling this keeps the tail short.
  std::stable_sort(plan.items.begin(), plan.items.end(),
                   [&cost](const AttentionWorkItem& a, const AttentionWorkItem& b) { return cost(a) > cost(b); });
  return plan;
}

}  // namespace bastion::cpu
