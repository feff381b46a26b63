// Inner loops of the CPU attention tile: q.k scores for a chunk of keys and the p.V accumulation.
// Two score forms: `dot` per (row, key) suits decode tiles of a few rows; for prefill tiles the key
// chunk is transposed once so each row's 32 scores come from broadcast-FMAs with no horizontal sums.
#pragma once

#include <immintrin.h>

#include "cpu/vec_math.h"

namespace bastion::cpu {

constexpr int kKvChunk = 32;        // keys per online-softmax step (four 8-lane registers of scores)
constexpr int kTransposeMinRows = 8;  // below this, transposing the chunk costs more than it saves

// In-register transpose of an 8x8 tile: r[i] becomes column i of the input rows.
inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// kt[d * kKvChunk + t] = k_rows[t][d]; columns t >= n are zeroed. 8x8 register transposes do the
// bulk: element-by-element copies took ~6% of prefill time (one scalar load + store per element).
template <typename T>
inline void transpose_keys(const T* const* k_rows, int n, int head_dim, float* kt) {
  int t0 = 0;
  for (; t0 + 8 <= n; t0 += 8) {
    int d = 0;
    for (; d + 8 <= head_dim; d += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = load8(k_rows[t0 + i] + d);
      transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(kt + (d + i) * kKvChunk + t0, r[i]);
    }
    for (; d < head_dim; ++d) {
      for (int i = 0; i < 8; ++i) kt[d * kKvChunk + t0 + i] = to_float(k_rows[t0 + i][d]);
    }
  }
  for (int d = 0; d < head_dim; ++d) {
    float* dst = kt + d * kKvChunk;
    for (int t = t0; t < n; ++t) dst[t] = to_float(k_rows[t][d]);
    for (int t = n; t < kKvChunk; ++t) dst[t] = 0.0f;
  }
}

// scores[r][t] = sum_d q[r][d] * kt[d][t] for R rows (row stride head_dim / kKvChunk) and all
// kKvChunk columns. R rows share every load of kt.
template <int R>
inline void scores_transposed(const float* q, const float* kt, int head_dim, float* scores) {
  __m256 s[R][4];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) s[r][j] = _mm256_setzero_ps();
  }
  for (int d = 0; d < head_dim; ++d) {
    const float* col = kt + d * kKvChunk;
    const __m256 k0 = _mm256_loadu_ps(col), k1 = _mm256_loadu_ps(col + 8);
    const __m256 k2 = _mm256_loadu_ps(col + 16), k3 = _mm256_loadu_ps(col + 24);
    for (int r = 0; r < R; ++r) {
      const __m256 qd = _mm256_set1_ps(q[r * head_dim + d]);
      s[r][0] = _mm256_fmadd_ps(qd, k0, s[r][0]);
      s[r][1] = _mm256_fmadd_ps(qd, k1, s[r][1]);
      s[r][2] = _mm256_fmadd_ps(qd, k2, s[r][2]);
      s[r][3] = _mm256_fmadd_ps(qd, k3, s[r][3]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(scores + r * kKvChunk + 8 * j, s[r][j]);
  }
}

// [sum a, sum b, sum c, sum d]: three hadds reduce four dot-product accumulators at once, about
// the cost of one hsum, so scoring 4 keys per pass pays a quarter of the horizontal-sum overhead.
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// scores[r * score_stride + j] = q[r] . k[j] for R query rows (head_dim apart) and the 4 keys at
// k + j * key_stride; head_dim must be a multiple of 8. Decode rows are few (one group of q heads),
// so each K load feeds R FMAs directly instead of paying a transpose of the keys.
template <int R, typename T>
inline void scores_4keys(const float* q, const T* k, int64_t key_stride, int head_dim, float* scores,
                         int64_t score_stride) {
  __m256 s[R][4];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) s[r][j] = _mm256_setzero_ps();
  }
  for (int d = 0; d < head_dim; d += 8) {
    const __m256 k0 = load8(k + d), k1 = load8(k + key_stride + d);
    const __m256 k2 = load8(k + 2 * key_stride + d), k3 = load8(k + 3 * key_stride + d);
    for (int r = 0; r < R; ++r) {
      const __m256 qd = _mm256_loadu_ps(q + r * head_dim + d);
      s[r][0] = _mm256_fmadd_ps(qd, k0, s[r][0]);
      s[r][1] = _mm256_fmadd_ps(qd, k1, s[r][1]);
      s[r][2] = _mm256_fmadd_ps(qd, k2, s[r][2]);
      s[r][3] = _mm256_fmadd_ps(qd, k3, s[r][3]);
    }
  }
  for (int r = 0; r < R; ++r) _mm_storeu_ps(scores + r * score_stride, hsum4(s[r][0], s[r][1], s[r][2], s[r][3]));
}

// acc[r][d] += sum_t p[r * p_stride + t] * row(t)[d] for R rows (acc row stride head_dim), where
// row(t) is the address of key t's V row. 32 dims of each row's acc stay in registers across all
// keys and the R rows share every load of V. Callers pass a pointer table or a fixed stride.
template <int R, typename RowAt>
inline void accumulate_pv_rows(float* acc, const float* p, int64_t p_stride, RowAt row, int n, int head_dim) {
  int d = 0;
  for (; d + 32 <= head_dim; d += 32) {
    __m256 a[R][4];
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < 4; ++j) a[r][j] = _mm256_loadu_ps(acc + r * head_dim + d + 8 * j);
    }
    for (int t = 0; t < n; ++t) {
      const auto* vt = row(t) + d;
      const __m256 v0 = load8(vt), v1 = load8(vt + 8);
      const __m256 v2 = load8(vt + 16), v3 = load8(vt + 24);
      for (int r = 0; r < R; ++r) {
        const __m256 pt = _mm256_set1_ps(p[r * p_stride + t]);
        a[r][0] = _mm256_fmadd_ps(pt, v0, a[r][0]);
        a[r][1] = _mm256_fmadd_ps(pt, v1, a[r][1]);
        a[r][2] = _mm256_fmadd_ps(pt, v2, a[r][2]);
        a[r][3] = _mm256_fmadd_ps(pt, v3, a[r][3]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < 4; ++j) _mm256_storeu_ps(acc + r * head_dim + d + 8 * j, a[r][j]);
    }
  }
  if (d == head_dim) return;
  for (int r = 0; r < R; ++r) {  // dims past the last multiple of 32
    for (int t = 0; t < n; ++t) axpy(acc + r * head_dim + d, p[r * p_stride + t], row(t) + d, head_dim - d);
  }
}

// V rows through a per-key pointer table (p row stride kKvChunk): the tile kernel's chunks.
template <int R, typename T>
inline void accumulate_pv(float* acc, const float* p, const T* const* v_rows, int n, int head_dim) {
  accumulate_pv_rows<R>(acc, p, kKvChunk, [v_rows](int t) { return v_rows[t]; }, n, head_dim);
}

// V rows at a fixed stride (the slots of one cache block): no per-key pointer table.
template <int R, typename T>
inline void accumulate_pv_strided(float* acc, const float* p, int64_t p_stride, const T* v, int64_t v_stride,
                                  int n, int head_dim) {
  accumulate_pv_rows<R>(acc, p, p_stride, [v, v_stride](int t) { return v + t * v_stride; }, n, head_dim);
}

}  // namespace bastion::cpu
