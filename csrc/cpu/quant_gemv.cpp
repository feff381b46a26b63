#include "cpu/quant_gemv.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("f16c")
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace bastion::cpu {

namespace {

// Smallest chunk of rows a thread takes (~16 rows are a few microseconds of work).
constexpr int kRowsPerChunk = 16;

// Two fp16 values (scale, min) -> fp32 lanes 0 and 1. F16C (every AVX2 CPU has it) is enabled for
// this file only, since the library builds with -mavx2 -mfma: scalar conversion cost ~30% of the kernel.
inline __m128 load_halves(const uint8_t* p, int count) {
  uint32_t bits = 0;
  std::memcpy(&bits, p, 2 * static_cast<size_t>(count));
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// The 32 4-bit weights of a Q4_1 block as bytes 0..15 in element order: the 16 packed bytes in
// both 128-bit lanes, the upper lane shifted down a nibble, then masked.
inline __m256i q4_nibbles(const uint8_t* b) {
  const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4)));
  return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}

// ----- fp32 activations: the exact dequantized matmul -------------------------------------------

// One block of 32 dequantized weights times 32 floats of x, accumulated into acc (FMA per 8).
template <QuantType T>
inline void fma_block(const uint8_t* b, const float* const* xs, int rows, __m256 (*acc)[2]) {
  __m256 w[4];
  if constexpr (T == QuantType::kQ4_1) {
    const __m128 dm = load_halves(b, 2);
    const __m256 d = _mm256_broadcastss_ps(dm), m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    const __m256i q = q4_nibbles(b);
    const __m128i parts[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
    for (int i = 0; i < 4; ++i) {
      const __m128i eight = i % 2 ? _mm_srli_si128(parts[i / 2], 8) : parts[i / 2];
      w[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight)), m);
    }
  } else {
    const __m256 d = _mm256_broadcastss_ps(load_halves(b, 1));
    for (int i = 0; i < 4; ++i) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * i));
      w[i] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)));
    }
  }
  for (int m = 0; m < rows; ++m) {
    for (int i = 0; i < 4; ++i) acc[m][i % 2] = _mm256_fmadd_ps(w[i], _mm256_loadu_ps(xs[m] + 8 * i), acc[m][i % 2]);
  }
}

// ----- int16 activations: x rounded per block, integer dot products per block --------------------

template <QuantType T>
inline void dot_block(const uint8_t* b, const Q16Block* const* xs, int rows, __m256 (*acc)[2], int slot,
                      float (*mins)[2]) {
  // the 32 weights as two vectors of 16 int16 (elements 0..15, 16..31)
  __m256i lo, hi;
  float d, m = 0.0f;
  if constexpr (T == QuantType::kQ4_1) {
    const __m128 dm = load_halves(b, 2);
    d = _mm_cvtss_f32(dm);
    m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
    const __m256i bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4)));
    lo = _mm256_and_si256(bytes, _mm256_set1_epi16(0x0F));
    hi = _mm256_srli_epi16(bytes, 4);  // a byte's high nibble: nothing above it in the 16-bit lane
  } else {
    d = _mm_cvtss_f32(load_halves(b, 1));
    lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2)));
    hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18)));
  }
  for (int r = 0; r < rows; ++r) {
    const __m256i* qx = reinterpret_cast<const __m256i*>(xs[r]->q);
    // |w| <= 128, |x| <= 32767: each int32 lane sums four products, far from overflow
    const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(qx)),
                                       _mm256_madd_epi16(hi, _mm256_loadu_si256(qx + 1)));
    acc[r][slot] = _mm256_fmadd_ps(_mm256_set1_ps(d * xs[r]->d), _mm256_cvtepi32_ps(p), acc[r][slot]);
    if constexpr (T == QuantType::kQ4_1) mins[r][slot] += m * xs[r]->sum;
  }
}

// ----- the driver shared by both precisions -----------------------------------------------------

// One weight row against up to four x rows: each block is decoded once and used by every row
// (eight accumulators + the decoded weights fit the 16 ymm registers).
template <QuantType T, typename X>
void row_tile(const X* const* xs, int rows, int64_t blocks, const uint8_t* row, float* const* ys) {
  constexpr int kBytes = quant_block_bytes(T);
  __m256 acc[4][2];
  float mins[4][2] = {};  // Q4_1's min terms, two chains like the vector accumulators
  for (int m = 0; m < rows; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  const X* cur[4];
  for (int64_t b = 0; b < blocks; ++b) {
    if constexpr (std::is_same_v<X, float>) {
      for (int m = 0; m < rows; ++m) cur[m] = xs[m] + b * kQuantBlock;
      fma_block<T>(row + b * kBytes, cur, rows, acc);
    } else {
      for (int m = 0; m < rows; ++m) cur[m] = xs[m] + b;
      dot_block<T>(row + b * kBytes, cur, rows, acc, static_cast<int>(b & 1), mins);  // two chains hide FMA latency
    }
  }
  for (int m = 0; m < rows; ++m) *ys[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1])) + (mins[m][0] + mins[m][1]);
}

// Rows are handed out in guided chunks: large contiguous ones first, so each thread streams through
// memory the way the hardware prefetcher likes (16-row dynamic chunks taken in turns left two threads
// at 1.35x one: decode GEMVs 6.0 vs 8.1 ms per SmolLM2 token; guided: 4.1 ms), then small ones at
// the end, so a thread the OS parks (another process on the cores) does not hold half the rows.
template <QuantType T, typename X>
void matmul(const X* x, int64_t x_stride, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K,
            int num_threads) {
  const int64_t blocks = K / kQuantBlock;
  const int64_t row_bytes = blocks * quant_block_bytes(T);
#pragma omp parallel for num_threads(std::max(1, num_threads)) schedule(guided, kRowsPerChunk)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int rows = static_cast<int>(std::min<int64_t>(M - m0, 4));
      const X* xs[4];
      float* ys[4];
      for (int m = 0; m < rows; ++m) {
        xs[m] = x + (m0 + m) * x_stride;
        ys[m] = y + (m0 + m) * N + n;
      }
      row_tile<T, X>(xs, rows, blocks, w + n * row_bytes, ys);
    }
  }
}

template <typename X>
void dispatch(const X* x, int64_t x_stride, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K,
              QuantType type, int num_threads) {
  if (type == QuantType::kQ4_1) {
    matmul<QuantType::kQ4_1, X>(x, x_stride, w, y, M, N, K, num_threads);
  } else if (type == QuantType::kQ8_0) {
    matmul<QuantType::kQ8_0, X>(x, x_stride, w, y, M, N, K, num_threads);
  }
}

}  // namespace

void quantize_activations(const float* x, int64_t n, Q16Block* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    __m256 amax = _mm256_setzero_ps();
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int i = 0; i < 4; ++i) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(xb + 8 * i)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float d = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4))) / 32767.0f;
    const __m256 inv = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    __m256i sum = _mm256_setzero_si256();
    __m256i q32[4];
    for (int i = 0; i < 4; ++i) {
      q32[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * i), inv),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      sum = _mm256_add_epi32(sum, q32[i]);
    }
    // packs work within 128-bit lanes, so elements come out lane-interleaved; the permutes undo it
    auto* dst = reinterpret_cast<__m256i*>(out[b].q);
    _mm256_storeu_si256(dst, _mm256_permute4x64_epi64(_mm256_packs_epi32(q32[0], q32[1]), 0xD8));
    _mm256_storeu_si256(dst + 1, _mm256_permute4x64_epi64(_mm256_packs_epi32(q32[2], q32[3]), 0xD8));
    out[b].d = d;
    out[b].sum = d * hsum(_mm256_cvtepi32_ps(sum));
  }
}

void quant_matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
                  int num_threads, ActivationBits bits) {
  if (bits == ActivationBits::k32) {
    dispatch<float>(x, K, w, y, M, N, K, type, num_threads);
    return;
  }
  // the rounded rows are small (M * K / 32 blocks of 72 bytes): one buffer per calling thread, grown once
  static thread_local std::vector<Q16Block> acts;
  const int64_t blocks = K / kQuantBlock;
  if (static_cast<int64_t>(acts.size()) < M * blocks) acts.resize(static_cast<size_t>(M * blocks));
  for (int64_t m = 0; m < M; ++m) quantize_activations(x + m * K, K, acts.data() + m * blocks);
  dispatch<Q16Block>(acts.data(), blocks, w, y, M, N, K, type, num_threads);
}

}  // namespace bastion::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
