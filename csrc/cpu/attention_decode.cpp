// Single-token decode items and the merge of split decodes. A decode item covers all kv heads and
// walks the sequence's cache pages in order, so every slot's rows of all heads are read together
// (see attention_plan.h); decodes split over their KV range are combined here by log-sum-exp.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/attention_microkernels.h"
#include "cpu/attention_tile.h"
#include "cpu/vec_math.h"

namespace bastion::cpu {

namespace {

// Prefetches the K and V rows of every head of slots [0, n) of a cache page into L2.
template <typename T>
void prefetch_page(const PagedAttentionArgs& a, int64_t page, int n) {
  const int64_t row_bytes = static_cast<int64_t>(a.head_dim) * sizeof(T);
  for (const PagedCache* c : {&a.k, &a.v}) {
    const char* base = reinterpret_cast<const char*>(c->at<T>(page * c->block_stride));
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < a.num_kv_heads; ++h) {
        const char* row = base + (t * c->slot_stride + h * c->head_stride) * static_cast<int64_t>(sizeof(T));
        for (int64_t b = 0; b < row_bytes; b += 64) _mm_prefetch(row + b, _MM_HINT_T1);
      }
    }
  }
}

// Scores of the `group` q rows at q for keys k + t * slot_stride, t < n, into scores[r * kDecodeSpan + t].
template <typename T>
void decode_scores(const float* q, int group, const T* k, int64_t slot_stride, int n, int head_dim,
                   float* scores) {
  int t = 0;
  if (head_dim % 8 == 0) {
    for (; t + 4 <= n; t += 4) {
      const T* kt = k + t * slot_stride;
      int r = 0;
      for (; r + 3 <= group; r += 3) {
        scores_4keys<3>(q + r * head_dim, kt, slot_stride, head_dim, scores + r * kDecodeSpan + t, kDecodeSpan);
      }
      for (; r < group; ++r) {
        scores_4keys<1>(q + r * head_dim, kt, slot_stride, head_dim, scores + r * kDecodeSpan + t, kDecodeSpan);
      }
    }
  }
  for (; t < n; ++t) {
    for (int r = 0; r < group; ++r) scores[r * kDecodeSpan + t] = dot(q + r * head_dim, k + t * slot_stride, head_dim);
  }
}

}  // namespace

// A single-token item over all kv heads (rows = q heads, every key visible; see attention_plan.h).
// Per span of keys: one pass over the K pages scoring every head of a slot while its lines are hot,
// one exact softmax update per row, one pass over the V pages. Walking whole pages keeps the reads
// sequential within each page; the next page is prefetched since pages are scattered.
template <typename T>
void run_decode_item(const PagedAttentionArgs& a, const AttentionWorkItem& item, TileScratch& s) {
  const int D = a.head_dim;
  const int group = a.num_heads / a.num_kv_heads;
  const int bs = a.block_size;
  const int32_t* block_row = a.block_table + item.seq * a.block_table_stride;
  float* const scores = s.span_scores.data();
  for (int64_t span0 = item.kv_begin; span0 < item.kv_end; span0 += kDecodeSpan) {
    const int64_t span_end = std::min<int64_t>(item.kv_end, span0 + kDecodeSpan);
    const int n = static_cast<int>(span_end - span0);
    for (int64_t pos = span0; pos < span_end;) {
      const int64_t blk = pos / bs;
      const int slot0 = static_cast<int>(pos % bs);
      const int cnt = static_cast<int>(std::min<int64_t>(bs - slot0, span_end - pos));
      if ((blk + 1) * bs < item.kv_end) {
        prefetch_page<T>(a, block_row[blk + 1], static_cast<int>(std::min<int64_t>(bs, item.kv_end - (blk + 1) * bs)));
      }
      const T* k = a.k.at<T>(block_row[blk] * a.k.block_stride + slot0 * a.k.slot_stride);
      const int t0 = static_cast<int>(pos - span0);
      for (int h = 0; h < a.num_kv_heads; ++h) {
        const int r0 = h * group;
        decode_scores(s.q.data() + static_cast<int64_t>(r0) * D, group, k + h * a.k.head_stride, a.k.slot_stride,
                      cnt, D, scores + static_cast<int64_t>(r0) * kDecodeSpan + t0);
      }
      pos += cnt;
    }
    for (int r = 0; r < a.num_heads; ++r) {
      float* p = scores + static_cast<int64_t>(r) * kDecodeSpan;
      const float new_max = std::max(s.row_max[r], max_of(p, n));
      if (new_max > s.row_max[r] && s.row_sum[r] > 0.0f) {
        const float rescale = std::exp(s.row_max[r] - new_max);
        s.row_sum[r] *= rescale;
        scale_row(s.acc.data() + static_cast<int64_t>(r) * D, rescale, D);
      }
      s.row_max[r] = new_max;
      s.row_sum[r] += exp_shift_sum(p, new_max, n);
    }
    for (int64_t pos = span0; pos < span_end;) {
      const int64_t blk = pos / bs;
      const int slot0 = static_cast<int>(pos % bs);
      const int cnt = static_cast<int>(std::min<int64_t>(bs - slot0, span_end - pos));
      const T* v = a.v.at<T>(block_row[blk] * a.v.block_stride + slot0 * a.v.slot_stride);
      const int t0 = static_cast<int>(pos - span0);
      for (int h = 0; h < a.num_kv_heads; ++h) {
        const T* vh = v + h * a.v.head_stride;
        int r = h * group;
        const int r_end = r + group;
        for (; r + 3 <= r_end; r += 3) {
          accumulate_pv_strided<3>(s.acc.data() + static_cast<int64_t>(r) * D, scores + r * kDecodeSpan + t0,
                                   kDecodeSpan, vh, a.v.slot_stride, cnt, D);
        }
        for (; r < r_end; ++r) {
          accumulate_pv_strided<1>(s.acc.data() + static_cast<int64_t>(r) * D, scores + r * kDecodeSpan + t0,
                                   kDecodeSpan, vh, a.v.slot_stride, cnt, D);
        }
      }
      pos += cnt;
    }
  }
}

template void run_decode_item<float>(const PagedAttentionArgs&, const AttentionWorkItem&, TileScratch&);
template void run_decode_item<uint16_t>(const PagedAttentionArgs&, const AttentionWorkItem&, TileScratch&);

// out = sum_i exp(lse_i - max) * O_i / sum_i exp(lse_i - max) over the splits of one decode.
void merge_splits(const PagedAttentionArgs& a, const AttentionMerge& m, const PartialBuffer& partials) {
  const int64_t token = a.cu_seqlens_q[m.seq];
  for (int head = 0; head < a.num_heads; ++head) {
    float* dst = a.out + token * a.out_token_stride + head * a.out_head_stride;
    float max_lse = kNegInf;
    for (int i = 0; i < m.num_splits; ++i) {
      max_lse = std::max(max_lse, partials.lse[(m.first_partial + i) * a.num_heads + head]);
    }
    std::fill(dst, dst + a.head_dim, 0.0f);
    if (max_lse == kNegInf) continue;
    float total = 0.0f;
    for (int i = 0; i < m.num_splits; ++i) {
      const int64_t slot = (m.first_partial + i) * a.num_heads + head;
      const float w = std::exp(partials.lse[slot] - max_lse);
      total += w;
      axpy(dst, w, partials.out.data() + slot * a.head_dim, a.head_dim);
    }
    scale_row(dst, 1.0f / total, a.head_dim);
  }
}

}  // namespace bastion::cpu
