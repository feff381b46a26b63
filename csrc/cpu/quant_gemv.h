// Small-batch matmul straight from GGUF quantized blocks: y[M, N] = x[M, K] @ W^T.
// Single-stream decode reads every weight once per token, so reading the ~4.5-bit blocks instead of
// fp32 weights is what makes it fast. Activations in two precisions: fp32 gives the fp32 matmul with
// the dequantized W up to summation order; int16 rounds x per 32 values to integers with one scale
// (relative error ~2e-5 per matmul) and sums integer products per block: 1.3x less time on one core.
// llama.cpp rounds to int8 instead: 3 % faster here than int16, but ~5e-3 error per matmul, which
// turned SmolLM2's greedy answer to "What is the capital of France?" into French word salad.
#pragma once

#include <cstdint>

namespace bastion::cpu {

// GGUF block formats, values as in ggml's enum ggml_type (layouts in quant_blocks.h).
enum class QuantType : int {
  kQ4_0 = 2,   // 32 weights: fp16 d, 16 bytes of nibbles; w = d * (q - 8)
  kQ4_1 = 3,   // 32 weights: fp16 d, fp16 m, 16 bytes of nibbles; w = d * q + m
  kQ5_0 = 6,   // 32 weights: fp16 d, 32 fifth bits, 16 bytes of nibbles; w = d * (q - 16)
  kQ5_1 = 7,   // 32 weights: fp16 d, fp16 m, 32 fifth bits, 16 bytes of nibbles; w = d * q + m
  kQ8_0 = 8,   // 32 weights: fp16 d, 32 int8; w = d * q
  kQ2_K = 10,  // 256 weights: 2-bit q, a 4-bit scale and min per 16
  kQ3_K = 11,  // 256 weights: 3-bit q, a 6-bit scale per 16
  kQ4_K = 12,  // 256 weights: 8 sub-blocks of 32 with 6-bit scales and mins
  kQ5_K = 13,  // 256 weights: Q4_K with a fifth bit
  kQ6_K = 14,  // 256 weights: 6-bit q, an int8 scale per 16
};

// Unquantized weight types dequantize_rows also reads (ggml's numbers).
enum class FloatType : int { kF32 = 0, kF16 = 1, kBF16 = 30 };

constexpr int kQuantBlock = 32;  // weights per sub-block: the unit of the kernel and of activation rounding

// Weights per block of `type` (32 or 256), 0 for a type this kernel does not handle.
constexpr int quant_block_values(QuantType type) {
  switch (type) {
    case QuantType::kQ4_0: case QuantType::kQ4_1: case QuantType::kQ5_0: case QuantType::kQ5_1:
    case QuantType::kQ8_0: return 32;
    case QuantType::kQ2_K: case QuantType::kQ3_K: case QuantType::kQ4_K: case QuantType::kQ5_K:
    case QuantType::kQ6_K: return 256;
  }
  return 0;
}

// Bytes of one block of `type`; 0 for a type this kernel does not handle.
constexpr int quant_block_bytes(QuantType type) {
  switch (type) {
    case QuantType::kQ4_0: return 18;
    case QuantType::kQ4_1: return 20;
    case QuantType::kQ5_0: return 22;
    case QuantType::kQ5_1: return 24;
    case QuantType::kQ8_0: return 34;
    case QuantType::kQ2_K: return 84;
    case QuantType::kQ3_K: return 110;
    case QuantType::kQ4_K: return 144;
    case QuantType::kQ5_K: return 176;
    case QuantType::kQ6_K: return 210;
  }
  return 0;
}

// Bits of the activations in quant_matmul: 32 = fp32 as given, 16 = rounded per block of 32.
enum class ActivationBits : int { k32 = 32, k16 = 16 };

// 32 activations as int16: x[j] ~= d * q[j], |q| <= 32767; sum = d * sum(q) for the offset terms
// (Q4_1's min), sum_lo the same over q[0..15] (Q2_K has an offset per 16).
struct Q16Block {
  float d;
  float sum;
  float sum_lo;
  int16_t q[kQuantBlock];
};

// Round n floats (n a multiple of 32) into n / 32 blocks: d = max|x| / 32767, nearest (ties to even).
void quantize_activations(const float* x, int64_t n, Q16Block* out);

// y[m * ldy + n] = sum_k x[m * K + k] * W[n, k] for m < M, n < N, with W row n stored as contiguous
// blocks of `type` (K / quant_block_values(type) of them). x is contiguous fp32; ldy <= 0 means N (a
// larger ldy writes a column range of a wider output). K must be a multiple of the type's block
// values (the caller checks). Output rows are split over `num_threads` OpenMP threads.
void quant_matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
                  int num_threads, ActivationBits bits, int64_t ldy = 0);

// out[r, :] = dequantized row rows[r] (or row first + r when rows is null) of W [N, K], r < num_rows,
// for any QuantType or FloatType number `ggml_type`: the embedding lookup of a quantized token table
// and the panels of the large-M matmul. `out` is fp32, or bf16 (rounded to nearest even) when
// `bf16_out`. Returns false (and writes nothing) for a type it does not read.
bool dequantize_rows(const uint8_t* w, int ggml_type, int64_t K, const int64_t* rows, int64_t first, int64_t num_rows,
                     void* out, bool bf16_out, int num_threads);

}  // namespace bastion::cpu
