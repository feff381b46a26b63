// GGUF weight blocks decoded 32 weights at a time for the kernels of quant_gemv.cpp. Every format reads
// as "32 small integers q and w = scale * q + offset" per 32 weights (Q2_K, Q3_K and Q6_K: a scale and
// an offset per 16), which lets one integer dot-product kernel serve all of them. Private to
// quant_gemv.cpp. The fp16 scales are converted with F16C (every AVX2 CPU has it; the library builds
// with -mf16c: a scalar conversion cost ~30 % of the kernel).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/quant_gemv.h"

namespace bastion::cpu::blocks {

// 32 weights: q as int16 (elements 0..15 in lo, 16..31 in hi); w = scale * q + offset for elements
// 0..15 and scale_hi * q + offset_hi for 16..31 (the same pair unless the format has kTwoScales).
struct SubBlock {
  __m256i lo, hi;
  float scale, offset, scale_hi, offset_hi;
};

// The scales of every sub-block of one block, decoded once per block: a K-quant's 8 sub-blocks share
// its fp16 scales and packed 6-bit ones (decoding them per sub-block cost ~40 % of the kernel).
// One-scale formats fill scale/offset only; the driver copies them to the _hi pair.
template <int kSubs>
struct Scales {
  float scale[kSubs], offset[kSubs], scale_hi[kSubs], offset_hi[kSubs];
};

inline float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
}

// Two consecutive fp16 values (a block's scale and min) with one conversion.
inline void two_halves_to_float(const uint8_t* p, float& first, float& second) {
  uint32_t bits;
  std::memcpy(&bits, p, sizeof bits);
  const __m128 both = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));
  first = _mm_cvtss_f32(both);
  second = _mm_cvtss_f32(_mm_movehdup_ps(both));
}

inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// 16 packed bytes -> low nibbles (elements 0..15) and high nibbles (16..31), as int16.
inline void split_nibbles16(const uint8_t* p, SubBlock& s) {
  const __m256i bytes = _mm256_cvtepu8_epi16(load16(p));
  s.lo = _mm256_and_si256(bytes, _mm256_set1_epi16(0x0F));
  s.hi = _mm256_srli_epi16(bytes, 4);  // a byte's high nibble: nothing above it in the 16-bit lane
}

// 32 bytes of 0..255 values -> int16 minus `bias`, elements in order.
inline void widen32(__m256i bytes, int16_t bias, SubBlock& s) {
  s.lo = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(bytes)), _mm256_set1_epi16(bias));
  s.hi = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(bytes, 1)), _mm256_set1_epi16(bias));
}

// 16 packed bytes -> the 32 nibbles as bytes in element order (low nibbles, then high nibbles).
inline __m256i nibbles32(const uint8_t* p) {
  const __m256i both = _mm256_broadcastsi128_si256(load16(p));
  return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}

// The fifth bits of Q5 blocks: bit j of the little-endian 32-bit `qh` as 16 in byte j (0 otherwise).
inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, sizeof bits);
  // byte j takes qh's byte j / 8, keeps bit j % 8, and turns it into 0x10
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                                             _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202,
                                                                0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

// The bits of `v` shifted right by `shift`, bytewise (the 16-bit shift's spill between bytes is masked).
inline __m256i bits_at(__m256i v, int shift, int8_t mask) {
  return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(mask));
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (12 packed bytes at `sc`).
inline void k_scale_min(const uint8_t* sc, int j, int& scale, int& min) {
  scale = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4);
  min = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
}

// Format<T>: kSubs sub-blocks of 32 per block; scales() decodes a block's scales once, quants()
// one sub-block's q into SubBlock::lo/hi. kTwoScales: a scale (and offset) per 16 weights;
// kOffsets: some offset is nonzero (the integer kernels then need the activations' sums).
// For the int8 kernels (quant_i8_kernel.inc) every format also reads as unsigned bytes: u8(block, j)
// is sub-block j's 32 values u (0..255, element order) and q = u - kBias, so that
// w = scale * (u - kBias) + offset; u8 x s8 dot products (VNNI vpdpbusd, AVX2 maddubs) then fold
// kBias into an integer term of the activations' sums. kSigned: the raw bytes are int8 (Q8_0), u8
// flips their sign bit.
template <QuantType T>
struct Format;

template <>
struct Format<QuantType::kQ4_0> {  // fp16 d, 16 bytes of nibbles: w = d * (q - 8)
  static constexpr int kSubs = 1;
  static constexpr bool kTwoScales = false;
  static constexpr bool kOffsets = false;
  static constexpr int kBias = 8;
  static constexpr bool kSigned = false;
  static void scales(const uint8_t* b, Scales<1>& s) {
    s.scale[0] = half_to_float(b);
    s.offset[0] = 0.0f;
  }
  static void quants(const uint8_t* b, int, SubBlock& s) {
    split_nibbles16(b + 2, s);
    s.lo = _mm256_sub_epi16(s.lo, _mm256_set1_epi16(kBias));
    s.hi = _mm256_sub_epi16(s.hi, _mm256_set1_epi16(kBias));
  }
  static __m256i u8(const uint8_t* b, int) { return nibbles32(b + 2); }
};

template <>
struct Format<QuantType::kQ4_1> {  // fp16 d, fp16 m, 16 bytes of nibbles: w = d * q + m
  static constexpr int kSubs = 1;
  static constexpr bool kTwoScales = false;
  static constexpr bool kOffsets = true;
  static constexpr int kBias = 0;
  static constexpr bool kSigned = false;
  static void scales(const uint8_t* b, Scales<1>& s) { two_halves_to_float(b, s.scale[0], s.offset[0]); }
  static void quants(const uint8_t* b, int, SubBlock& s) { split_nibbles16(b + 4, s); }
  static __m256i u8(const uint8_t* b, int) { return nibbles32(b + 4); }
};

template <>
struct Format<QuantType::kQ5_0> {  // fp16 d, 32 high bits, 16 bytes of nibbles: w = d * (q - 16), q 5-bit
  static constexpr int kSubs = 1;
  static constexpr bool kTwoScales = false;
  static constexpr bool kOffsets = false;
  static constexpr int kBias = 16;
  static constexpr bool kSigned = false;
  static void scales(const uint8_t* b, Scales<1>& s) {
    s.scale[0] = half_to_float(b);
    s.offset[0] = 0.0f;
  }
  static __m256i u8(const uint8_t* b, int) { return _mm256_or_si256(nibbles32(b + 6), fifth_bits(b + 2)); }
  static void quants(const uint8_t* b, int j, SubBlock& s) { widen32(u8(b, j), kBias, s); }
};

template <>
struct Format<QuantType::kQ5_1> {  // fp16 d, fp16 m, 32 high bits, 16 bytes of nibbles: w = d * q + m
  static constexpr int kSubs = 1;
  static constexpr bool kTwoScales = false;
  static constexpr bool kOffsets = true;
  static constexpr int kBias = 0;
  static constexpr bool kSigned = false;
  static void scales(const uint8_t* b, Scales<1>& s) { two_halves_to_float(b, s.scale[0], s.offset[0]); }
  static __m256i u8(const uint8_t* b, int) { return _mm256_or_si256(nibbles32(b + 8), fifth_bits(b + 4)); }
  static void quants(const uint8_t* b, int j, SubBlock& s) { widen32(u8(b, j), kBias, s); }
};

template <>
struct Format<QuantType::kQ8_0> {  // fp16 d, 32 int8: w = d * q
  static constexpr int kSubs = 1;
  static constexpr bool kTwoScales = false;
  static constexpr bool kOffsets = false;
  static constexpr int kBias = 128;
  static constexpr bool kSigned = true;
  static void scales(const uint8_t* b, Scales<1>& s) {
    s.scale[0] = half_to_float(b);
    s.offset[0] = 0.0f;
  }
  static void quants(const uint8_t* b, int, SubBlock& s) {
    s.lo = _mm256_cvtepi8_epi16(load16(b + 2));
    s.hi = _mm256_cvtepi8_epi16(load16(b + 18));
  }
  static __m256i u8(const uint8_t* b, int) { return _mm256_xor_si256(load32(b + 2), _mm256_set1_epi8(-128)); }
};

template <>
struct Format<QuantType::kQ4_K> {  // 256 weights: fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 of nibbles
  static constexpr int kSubs = 8;
  static constexpr bool kTwoScales = false;
  static constexpr bool kOffsets = true;
  static void scales(const uint8_t* b, Scales<8>& s) {  // sub-block j: w = d * sc_j * q - dmin * m_j
    float d, dmin;
    two_halves_to_float(b, d, dmin);
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      k_scale_min(b + 4, j, scale, min);
      s.scale[j] = d * static_cast<float>(scale);
      s.offset[j] = -dmin * static_cast<float>(min);
    }
  }
  static constexpr int kBias = 0;
  static constexpr bool kSigned = false;
  static __m256i u8(const uint8_t* b, int j) {
    const __m256i bytes = load32(b + 16 + 32 * (j / 2));  // sub-blocks 2g and 2g + 1 share 32 bytes
    return _mm256_and_si256(j % 2 ? _mm256_srli_epi16(bytes, 4) : bytes, _mm256_set1_epi8(0x0F));
  }
  static void quants(const uint8_t* b, int j, SubBlock& s) { widen32(u8(b, j), kBias, s); }
};

template <>
struct Format<QuantType::kQ6_K> {  // 256 weights: 128 bytes low nibbles, 64 of 2-bit highs, 16 int8 scales, fp16 d
  static constexpr int kSubs = 8;
  static constexpr bool kTwoScales = true;
  static constexpr bool kOffsets = false;
  static void scales(const uint8_t* b, Scales<8>& s) {  // w = d * sc * (q - 32), a scale per 16 weights
    const float d = half_to_float(b + 208);
    for (int j = 0; j < 8; ++j) {
      s.scale[j] = d * static_cast<float>(static_cast<int8_t>(b[192 + 2 * j]));
      s.scale_hi[j] = d * static_cast<float>(static_cast<int8_t>(b[193 + 2 * j]));
      s.offset[j] = s.offset_hi[j] = 0.0f;
    }
  }
  static constexpr int kBias = 32;
  static constexpr bool kSigned = false;
  static __m256i u8(const uint8_t* b, int j) {
    const int half = j / 4, part = j % 4;
    const __m256i low = load32(b + 64 * half + 32 * (part % 2));
    const __m256i nibbles = _mm256_and_si256(part < 2 ? low : _mm256_srli_epi16(low, 4), _mm256_set1_epi8(0x0F));
    const __m256i high = _mm256_and_si256(_mm256_srl_epi16(load32(b + 128 + 32 * half), _mm_cvtsi32_si128(2 * part)),
                                          _mm256_set1_epi8(0x03));
    return _mm256_or_si256(nibbles, _mm256_slli_epi16(high, 4));
  }
  static void quants(const uint8_t* b, int j, SubBlock& s) { widen32(u8(b, j), kBias, s); }
};

template <>
struct Format<QuantType::kQ2_K> {  // 256 weights: 16 bytes of 4-bit scale|min, 64 of 2-bit q, fp16 d, fp16 dmin
  static constexpr int kSubs = 8;
  static constexpr bool kTwoScales = true;
  static constexpr bool kOffsets = true;
  static void scales(const uint8_t* b, Scales<8>& s) {  // 16 weights i: w = d * (sc_i & 15) * q - dmin * (sc_i >> 4)
    float d, dmin;
    two_halves_to_float(b + 80, d, dmin);
    for (int j = 0; j < 8; ++j) {
      s.scale[j] = d * static_cast<float>(b[2 * j] & 0x0F);
      s.offset[j] = -dmin * static_cast<float>(b[2 * j] >> 4);
      s.scale_hi[j] = d * static_cast<float>(b[2 * j + 1] & 0x0F);
      s.offset_hi[j] = -dmin * static_cast<float>(b[2 * j + 1] >> 4);
    }
  }
  static constexpr int kBias = 0;
  static constexpr bool kSigned = false;
  static __m256i u8(const uint8_t* b, int j) {  // sub-block j: bits 2(j%4) of 32 bytes
    return bits_at(load32(b + 16 + 32 * (j / 4)), 2 * (j % 4), 0x03);
  }
  static void quants(const uint8_t* b, int j, SubBlock& s) { widen32(u8(b, j), kBias, s); }
};

template <>
struct Format<QuantType::kQ3_K> {  // 256 weights: 32 bytes of high bits, 64 of 2-bit q, 12 of 6-bit scales, fp16 d
  static constexpr int kSubs = 8;
  static constexpr bool kTwoScales = true;
  static constexpr bool kOffsets = false;
  static void scales(const uint8_t* b, Scales<8>& s) {  // 16 weights i: w = d * (sc_i - 32) * (q - 4 * !high bit)
    const float d = half_to_float(b + 108);
    const uint8_t* sc = b + 96;
    for (int j = 0; j < 8; ++j) {
      for (int h = 0; h < 2; ++h) {
        const int i = 2 * j + h;
        const int low = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
        const int high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        (h ? s.scale_hi : s.scale)[j] = d * static_cast<float>((low | (high << 4)) - 32);
      }
      s.offset[j] = s.offset_hi[j] = 0.0f;
    }
  }
  static constexpr int kBias = 4;
  static constexpr bool kSigned = false;
  static __m256i u8(const uint8_t* b, int j) {  // q = low 2 bits | high bit << 2, minus 4
    const __m256i low = bits_at(load32(b + 32 + 32 * (j / 4)), 2 * (j % 4), 0x03);
    const __m256i high = bits_at(load32(b), j, 0x01);
    return _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
  }
  static void quants(const uint8_t* b, int j, SubBlock& s) { widen32(u8(b, j), kBias, s); }
};

template <>
struct Format<QuantType::kQ5_K> {  // 256 weights: fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 32 of fifth bits, 128 of nibbles
  static constexpr int kSubs = 8;
  static constexpr bool kTwoScales = false;
  static constexpr bool kOffsets = true;
  static constexpr int kBias = 0;
  static constexpr bool kSigned = false;
  static void scales(const uint8_t* b, Scales<8>& s) { Format<QuantType::kQ4_K>::scales(b, s); }
  static __m256i u8(const uint8_t* b, int j) {
    const __m256i nibbles = bits_at(load32(b + 48 + 32 * (j / 2)), 4 * (j % 2), 0x0F);
    const __m256i fifth = bits_at(load32(b + 16), j, 0x01);
    return _mm256_or_si256(nibbles, _mm256_slli_epi16(fifth, 4));
  }
  static void quants(const uint8_t* b, int j, SubBlock& s) { widen32(u8(b, j), kBias, s); }
};

}  // namespace bastion::cpu::blocks
