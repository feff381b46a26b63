// Work planning for CPU paged attention: cuts a varlen batch into independent work items for
// OpenMP threads. Prefill tiles are (sequence, kv head, query tile). A single-token decode is one
// item over all kv heads, so it reads each cache slot's rows of every head together: reading one
// head's rows at the slot stride measured 7x slower once the cache outgrows the L3. Decodes that
// alone cannot keep every thread busy get their KV range split; the splits write partial results
// (normalised output + log-sum-exp) that a merge pass combines. Plain C++, no OpenMP, testable alone.
#pragma once

#include <cstdint>
#include <vector>

namespace bastion::cpu {

struct AttentionWorkItem {
  int32_t seq;            // sequence index
  int32_t kv_head_begin;  // kv heads [begin, end), each with all the q heads of its group
  int32_t kv_head_end;    // more than one kv head only for single-token (decode) items
  int32_t q_begin;        // first query of the tile, relative to the sequence's first query
  int32_t q_end;          // one past the last query of the tile
  int64_t kv_begin;       // first key position read
  int64_t kv_end;         // one past the last key position read
  int64_t partial;        // partial-result slot to fill (decode splits), or -1 to write the output
};

// The splits of one decode sequence: partial slots [first_partial, first_partial + num_splits),
// each holding every q head's normalised output and log-sum-exp.
struct AttentionMerge {
  int32_t seq;
  int64_t first_partial;
  int32_t num_splits;
};

struct AttentionPlan {
  std::vector<AttentionWorkItem> items;  // sorted by decreasing cost, for dynamic scheduling
  std::vector<AttentionMerge> merges;
  int64_t num_partials = 0;
  int64_t total_cost = 0;  // sum over items of query rows x keys: the number of q.k dot products
};

struct AttentionPlanOptions {
  int num_threads = 1;
  // Query rows (tokens x heads of a group) processed together. Each transposed key chunk is shared
  // by all rows, so taller tiles amortise the transpose and K reads: 96 rows (32 tokens at GQA 3)
  // ran prefill ~17% faster than 32 on the serving benchmark's 16x128 chunks.
  int q_tile_rows = 96;
  int min_split_tokens = 256;   // never make a KV split shorter than this
  int items_per_thread = 2;     // splitting stops once there are this many items per thread
};

// seq_lens / cu_seqlens_q must already be validated (see paged_attention.cpp).
AttentionPlan plan_attention(const int32_t* seq_lens, const int32_t* cu_seqlens_q, int num_seqs,
                             int num_kv_heads, int group_size, int sliding_window,
                             const AttentionPlanOptions& options);

}  // namespace bastion::cpu
