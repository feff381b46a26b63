#include "cpu/quant_gemv.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("f16c")
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace bastion::cpu {

namespace {

// ~16 rows of a decoder matrix are a few microseconds of work: large enough that handing out
// chunks costs nothing measurable, small enough to rebalance when a thread is descheduled.
constexpr int kRowsPerChunk = 16;

// fp16 scale -> broadcast fp32. F16C (every AVX2 CPU has it) is enabled for this file only, since
// the library builds with -mavx2 -mfma: the scalar bit-twiddling conversion cost ~30% of the kernel.
inline __m256 broadcast_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

// The 32 weights of one block as four vectors of eight, in element order.
struct Block {
  __m256 v[4];
};

inline Block load_q4_1(const uint8_t* b) {
  uint32_t dm;
  std::memcpy(&dm, b, sizeof dm);
  const __m128 dm_f = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm)));
  const __m256 d = _mm256_broadcastss_ps(dm_f);
  const __m256 m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm_f));
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);                     // elements 0..15
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);  // elements 16..31
  const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  Block out;
  for (int i = 0; i < 4; ++i) {
    const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[i]));
    out.v[i] = _mm256_fmadd_ps(d, q, m);
  }
  return out;
}

inline Block load_q8_0(const uint8_t* b) {
  const __m256 d = broadcast_half(b);
  Block out;
  for (int i = 0; i < 4; ++i) {
    const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * i));
    out.v[i] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)));
  }
  return out;
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// One output row against MT rows of x. Each block is dequantized once and used MT times; with
// one x row, four independent accumulators hide the FMA latency, with more rows the rows do.
template <QuantType T>
inline Block load_block(const uint8_t* b) {
  return T == QuantType::kQ4_1 ? load_q4_1(b) : load_q8_0(b);
}

template <int MT, QuantType T>
inline void row_tile(const float* x, int64_t K, const uint8_t* row, int block_bytes, float* y, int64_t N) {
  constexpr int kAcc = MT == 1 ? 4 : 2;
  __m256 acc[MT][kAcc];
  for (int m = 0; m < MT; ++m) {
    for (int a = 0; a < kAcc; ++a) acc[m][a] = _mm256_setzero_ps();
  }
  const int64_t blocks = K / kQuantBlock;
  for (int64_t b = 0; b < blocks; ++b) {
    const Block w = load_block<T>(row + b * block_bytes);
    const int64_t k0 = b * kQuantBlock;
    for (int m = 0; m < MT; ++m) {
      const float* xr = x + m * K + k0;
      for (int i = 0; i < 4; ++i) {
        acc[m][i % kAcc] = _mm256_fmadd_ps(w.v[i], _mm256_loadu_ps(xr + 8 * i), acc[m][i % kAcc]);
      }
    }
  }
  for (int m = 0; m < MT; ++m) {
    __m256 total = acc[m][0];
    for (int a = 1; a < kAcc; ++a) total = _mm256_add_ps(total, acc[m][a]);
    y[m * N] = hsum(total);
  }
}

// x rows go in tiles of up to four (eight accumulators + four weight vectors fit the 16 ymm
// registers); the weight row is re-read from L1 for each further tile. Rows are handed out in
// dynamic chunks: with a static split, a thread the OS parks (another process on the cores) holds
// half the rows and the call takes a whole time slice instead of finishing on the other thread.
template <QuantType T>
void matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, int num_threads) {
  const int block_bytes = quant_block_bytes(T);
  const int64_t row_bytes = K / kQuantBlock * block_bytes;
#pragma omp parallel for num_threads(std::max(1, num_threads)) schedule(dynamic, kRowsPerChunk)
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* row = w + n * row_bytes;
    for (int64_t m = 0; m < M;) {
      const float* xm = x + m * K;
      float* ym = y + m * N + n;
      switch (std::min<int64_t>(M - m, 4)) {
        case 1: row_tile<1, T>(xm, K, row, block_bytes, ym, N); m += 1; break;
        case 2: row_tile<2, T>(xm, K, row, block_bytes, ym, N); m += 2; break;
        case 3: row_tile<3, T>(xm, K, row, block_bytes, ym, N); m += 3; break;
        default: row_tile<4, T>(xm, K, row, block_bytes, ym, N); m += 4; break;
      }
    }
  }
}

}  // namespace

void quant_matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
                  int num_threads) {
  if (type == QuantType::kQ4_1) {
    matmul<QuantType::kQ4_1>(x, w, y, M, N, K, num_threads);
  } else if (type == QuantType::kQ8_0) {
    matmul<QuantType::kQ8_0>(x, w, y, M, N, K, num_threads);
  }
}

}  // namespace bastion::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
