#include "cpu/quant_gemv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/quant_blocks.h"
#include "cpu/quant_i8.h"

namespace bastion::cpu {

namespace {

using blocks::Format;
using blocks::SubBlock;

// Smallest chunk of rows a thread takes (~16 rows are a few microseconds of work).
constexpr int kRowsPerChunk = 16;
// Activation rows that share one decode of each weight sub-block: 8 rather than 4 gave 1.3-1.4x at
// 8-16 rows (gate_up of a 1.7B model, one thread; the accumulators spill to L1, which costs less).
constexpr int kTile = 8;

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// Per output row and x row: two vector accumulators and two scalar ones (the offset terms),
// alternating by sub-block so that consecutive FMAs do not wait on each other.
struct Acc {
  __m256 v[2];
  float offsets[2];
};

// ----- fp32 activations: the exact dequantized matmul -------------------------------------------

inline __m256 dequant8(__m128i q16x8, float scale, float offset) {
  return _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(q16x8)),
                         _mm256_set1_ps(offset));
}

template <typename F>
inline void accumulate(const SubBlock& s, const float* const* xs, int rows, Acc* acc, int slot) {
  const __m256 w[4] = {dequant8(_mm256_castsi256_si128(s.lo), s.scale, s.offset),
                       dequant8(_mm256_extracti128_si256(s.lo, 1), s.scale, s.offset),
                       dequant8(_mm256_castsi256_si128(s.hi), s.scale_hi, s.offset_hi),
                       dequant8(_mm256_extracti128_si256(s.hi, 1), s.scale_hi, s.offset_hi)};
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < 4; ++i) acc[r].v[slot] = _mm256_fmadd_ps(w[i], _mm256_loadu_ps(xs[r] + 8 * i), acc[r].v[slot]);
  }
}

// ----- int16 activations: x rounded per block, integer dot products per block --------------------

template <typename F>
inline void accumulate(const SubBlock& s, const Q16Block* const* xs, int rows, Acc* acc, int slot) {
  for (int r = 0; r < rows; ++r) {
    const auto* qx = reinterpret_cast<const __m256i*>(xs[r]->q);
    // |q| <= 128, |x| <= 32767: each int32 lane sums two products per half, far from overflow
    const __m256i lo = _mm256_madd_epi16(s.lo, _mm256_loadu_si256(qx));
    const __m256i hi = _mm256_madd_epi16(s.hi, _mm256_loadu_si256(qx + 1));
    const float dx = xs[r]->d;
    if constexpr (F::kTwoScales) {
      acc[r].v[slot] = _mm256_fmadd_ps(_mm256_set1_ps(s.scale * dx), _mm256_cvtepi32_ps(lo), acc[r].v[slot]);
      acc[r].v[slot] = _mm256_fmadd_ps(_mm256_set1_ps(s.scale_hi * dx), _mm256_cvtepi32_ps(hi), acc[r].v[slot]);
      if constexpr (F::kOffsets) {
        acc[r].offsets[slot] += s.offset * xs[r]->sum_lo + s.offset_hi * (xs[r]->sum - xs[r]->sum_lo);
      }
    } else {
      // w . x = scale dx (q . qx) + offset (dx sum qx)
      acc[r].v[slot] = _mm256_fmadd_ps(_mm256_set1_ps(s.scale * dx), _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi)),
                                       acc[r].v[slot]);
      if constexpr (F::kOffsets) acc[r].offsets[slot] += s.offset * xs[r]->sum;
    }
  }
}

// ----- the driver shared by both precisions -----------------------------------------------------

// One weight row against up to kTile x rows: each 32-weight sub-block is decoded once and used by
// every row; each block's scales once for its kSubs sub-blocks.
template <QuantType T, typename X>
void row_tile(const X* const* xs, int rows, int64_t subs, const uint8_t* row, float* const* ys) {
  using F = Format<T>;
  constexpr int kBytes = quant_block_bytes(T);
  Acc acc[kTile];
  for (int m = 0; m < rows; ++m) acc[m] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {0.0f, 0.0f}};
  const X* cur[kTile];
  for (int64_t first = 0; first < subs; first += F::kSubs) {
    const uint8_t* block = row + first / F::kSubs * kBytes;
    blocks::Scales<F::kSubs> scales;
    F::scales(block, scales);
#pragma GCC unroll 8  // constant j: each sub-block's byte offsets and shifts become immediates
    for (int j = 0; j < F::kSubs; ++j) {
      SubBlock sub;
      F::quants(block, j, sub);
      sub.scale = scales.scale[j];
      sub.offset = scales.offset[j];
      sub.scale_hi = F::kTwoScales ? scales.scale_hi[j] : sub.scale;
      sub.offset_hi = F::kTwoScales ? scales.offset_hi[j] : sub.offset;
      const int64_t s = first + j;
      for (int m = 0; m < rows; ++m) cur[m] = std::is_same_v<X, float> ? xs[m] + s * kQuantBlock : xs[m] + s;
      accumulate<F>(sub, cur, rows, acc, static_cast<int>(s & 1));
    }
  }
  for (int m = 0; m < rows; ++m) {
    *ys[m] = hsum(_mm256_add_ps(acc[m].v[0], acc[m].v[1])) + (acc[m].offsets[0] + acc[m].offsets[1]);
  }
}

// Rows are handed out in guided chunks: large contiguous ones first, so each thread streams through
// memory the way the hardware prefetcher likes (16-row dynamic chunks taken in turns left two threads
// at 1.35x one: decode GEMVs 6.0 vs 8.1 ms per SmolLM2 token; guided: 4.1 ms), then small ones at
// the end, so a thread the OS parks (another process on the cores) does not hold half the rows.
template <QuantType T, typename X>
void matmul(const X* x, int64_t x_stride, const uint8_t* w, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
            int num_threads) {
  const int64_t subs = K / kQuantBlock;
  const int64_t row_bytes = K / quant_block_values(T) * quant_block_bytes(T);
#pragma omp parallel for num_threads(std::max(1, num_threads)) schedule(guided, kRowsPerChunk)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t m0 = 0; m0 < M; m0 += kTile) {
      const int rows = static_cast<int>(std::min<int64_t>(M - m0, kTile));
      const X* xs[kTile];
      float* ys[kTile];
      for (int m = 0; m < rows; ++m) {
        xs[m] = x + (m0 + m) * x_stride;
        ys[m] = y + (m0 + m) * ldy + n;
      }
      row_tile<T, X>(xs, rows, subs, w + n * row_bytes, ys);
    }
  }
}

template <typename X>
void dispatch(const X* x, int64_t x_stride, const uint8_t* w, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
              QuantType type, int num_threads) {
  switch (type) {
    case QuantType::kQ4_0: matmul<QuantType::kQ4_0>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ4_1: matmul<QuantType::kQ4_1>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ5_0: matmul<QuantType::kQ5_0>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ5_1: matmul<QuantType::kQ5_1>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ8_0: matmul<QuantType::kQ8_0>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ2_K: matmul<QuantType::kQ2_K>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ3_K: matmul<QuantType::kQ3_K>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ4_K: matmul<QuantType::kQ4_K>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ5_K: matmul<QuantType::kQ5_K>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
    case QuantType::kQ6_K: matmul<QuantType::kQ6_K>(x, x_stride, w, y, ldy, M, N, K, num_threads); break;
  }
}


// ----- dequantized rows -------------------------------------------------------------------------

template <QuantType T>
void dequantize_row(const uint8_t* row, int64_t K, float* out) {
  using F = Format<T>;
  constexpr int kBytes = quant_block_bytes(T);
  for (int64_t first = 0; first < K / kQuantBlock; first += F::kSubs) {
    const uint8_t* block = row + first / F::kSubs * kBytes;
    blocks::Scales<F::kSubs> scales;
    F::scales(block, scales);
    for (int j = 0; j < F::kSubs; ++j) {
      SubBlock sub;
      F::quants(block, j, sub);
      const float scale_hi = F::kTwoScales ? scales.scale_hi[j] : scales.scale[j];
      const float offset_hi = F::kTwoScales ? scales.offset_hi[j] : scales.offset[j];
      float* y = out + (first + j) * kQuantBlock;
      _mm256_storeu_ps(y, dequant8(_mm256_castsi256_si128(sub.lo), scales.scale[j], scales.offset[j]));
      _mm256_storeu_ps(y + 8, dequant8(_mm256_extracti128_si256(sub.lo, 1), scales.scale[j], scales.offset[j]));
      _mm256_storeu_ps(y + 16, dequant8(_mm256_castsi256_si128(sub.hi), scale_hi, offset_hi));
      _mm256_storeu_ps(y + 24, dequant8(_mm256_extracti128_si256(sub.hi, 1), scale_hi, offset_hi));
    }
  }
}

void dequantize_f16_row(const uint8_t* row, int64_t K, float* out) {
  const auto* h = reinterpret_cast<const __m128i*>(row);
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) _mm256_storeu_ps(out + k, _mm256_cvtph_ps(_mm_loadu_si128(h + k / 8)));
  for (; k < K; ++k) out[k] = blocks::half_to_float(row + 2 * k);
}

void dequantize_bf16_row(const uint8_t* row, int64_t K, float* out) {
  for (int64_t k = 0; k < K; ++k) {  // bf16 is the top half of an fp32
    uint16_t bits;
    std::memcpy(&bits, row + 2 * k, sizeof bits);
    const uint32_t wide = static_cast<uint32_t>(bits) << 16;
    std::memcpy(out + k, &wide, sizeof wide);
  }
}

// fp32 -> bf16, rounded to nearest even (the values are finite weights: no NaN handling needed).
void float_to_bf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF);
  for (; i + 8 <= n; i += 8) {
    const __m256i bits = _mm256_castps_si256(_mm256_loadu_ps(x + i));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(bias, odd)), 16);
    // pack the 8 low halves: packus works per 128-bit lane, so the permute puts the halves in order
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(packed));
  }
  for (; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    out[i] = static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
  }
}

using RowDecoder = void (*)(const uint8_t*, int64_t, float*);

// The row decoder of a ggml type and the bytes of one row of K values; nullptr for a type not read.
RowDecoder row_decoder(int ggml_type, int64_t K, int64_t& row_bytes) {
  switch (ggml_type) {
    case static_cast<int>(FloatType::kF32):
      row_bytes = 4 * K;
      return [](const uint8_t* row, int64_t k, float* out) { std::memcpy(out, row, sizeof(float) * k); };
    case static_cast<int>(FloatType::kF16): row_bytes = 2 * K; return dequantize_f16_row;
    case static_cast<int>(FloatType::kBF16): row_bytes = 2 * K; return dequantize_bf16_row;
    default: break;
  }
  const auto type = static_cast<QuantType>(ggml_type);
  const int values = quant_block_values(type);
  if (values == 0 || K % values != 0) return nullptr;
  row_bytes = K / values * quant_block_bytes(type);
  switch (type) {
    case QuantType::kQ4_0: return dequantize_row<QuantType::kQ4_0>;
    case QuantType::kQ4_1: return dequantize_row<QuantType::kQ4_1>;
    case QuantType::kQ5_0: return dequantize_row<QuantType::kQ5_0>;
    case QuantType::kQ5_1: return dequantize_row<QuantType::kQ5_1>;
    case QuantType::kQ8_0: return dequantize_row<QuantType::kQ8_0>;
    case QuantType::kQ2_K: return dequantize_row<QuantType::kQ2_K>;
    case QuantType::kQ3_K: return dequantize_row<QuantType::kQ3_K>;
    case QuantType::kQ4_K: return dequantize_row<QuantType::kQ4_K>;
    case QuantType::kQ5_K: return dequantize_row<QuantType::kQ5_K>;
    case QuantType::kQ6_K: return dequantize_row<QuantType::kQ6_K>;
  }
  return nullptr;
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
    __m256i q32[4];
    for (int i = 0; i < 4; ++i) {
      q32[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * i), inv),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    const __m256i sum_lo = _mm256_add_epi32(q32[0], q32[1]);
    const __m256i sum = _mm256_add_epi32(sum_lo, _mm256_add_epi32(q32[2], q32[3]));
    // packs work within 128-bit lanes, so elements come out lane-interleaved; the permutes undo it
    auto* dst = reinterpret_cast<__m256i*>(out[b].q);
    _mm256_storeu_si256(dst, _mm256_permute4x64_epi64(_mm256_packs_epi32(q32[0], q32[1]), 0xD8));
    _mm256_storeu_si256(dst + 1, _mm256_permute4x64_epi64(_mm256_packs_epi32(q32[2], q32[3]), 0xD8));
    out[b].d = d;
    out[b].sum = d * hsum(_mm256_cvtepi32_ps(sum));
    out[b].sum_lo = d * hsum(_mm256_cvtepi32_ps(sum_lo));
  }
}

void quant_matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
                  int num_threads, ActivationBits bits, int64_t ldy, QuantIsa isa) {
  if (ldy <= 0) ldy = N;
  if (M <= 0 || N <= 0) return;
  if (bits == ActivationBits::k32) {
    dispatch<float>(x, K, w, y, ldy, M, N, K, type, num_threads);
    return;
  }
  if (isa == QuantIsa::kAuto) isa = active_quant_isa();
  const int planes = bits == ActivationBits::k8 ? 1 : 2;
  if (i8::runs(isa, planes)) {
    i8::matmul(x, w, y, M, N, K, type, num_threads, planes, ldy, isa);
    return;
  }
  // the rounded rows are small (M * K / 32 blocks of 72 bytes): one buffer per calling thread, grown once
  static thread_local std::vector<Q16Block> acts;
  const int64_t subs = K / kQuantBlock;
  if (static_cast<int64_t>(acts.size()) < M * subs) acts.resize(static_cast<size_t>(M * subs));
  for (int64_t m = 0; m < M; ++m) quantize_activations(x + m * K, K, acts.data() + m * subs);
  dispatch<Q16Block>(acts.data(), subs, w, y, ldy, M, N, K, type, num_threads);
}

bool dequantize_rows(const uint8_t* w, int ggml_type, int64_t K, const int64_t* rows, int64_t first, int64_t num_rows,
                     void* out, bool bf16_out, int num_threads) {
  int64_t row_bytes = 0;
  const RowDecoder decode = row_decoder(ggml_type, K, row_bytes);
  if (decode == nullptr) return false;
#pragma omp parallel num_threads(std::max(1, num_threads)) if (num_rows * K >= (1 << 16))
  {
    std::vector<float> row_buffer(bf16_out ? static_cast<size_t>(K) : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < num_rows; ++r) {
      const uint8_t* source = w + (rows != nullptr ? rows[r] : first + r) * row_bytes;
      if (!bf16_out) {
        decode(source, K, static_cast<float*>(out) + r * K);
        continue;
      }
      decode(source, K, row_buffer.data());
      float_to_bf16(row_buffer.data(), K, static_cast<uint16_t*>(out) + r * K);
    }
  }
  return true;
}

}  // namespace bastion::cpu
