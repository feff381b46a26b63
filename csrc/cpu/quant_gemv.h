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

// GGUF block formats (32 weights per block), values as in ggml's enum ggml_type.
enum class QuantType : int {
  kQ4_0 = 2,  // unused here; listed so the numbering reads like ggml's
  kQ4_1 = 3,  // fp16 d, fp16 m, 16 bytes: weight j = d * q + m, q = byte[j % 16] >> (4 * (j / 16)) & 15
  kQ8_0 = 8,  // fp16 d, 32 int8: weight j = d * q[j]
};

constexpr int kQuantBlock = 32;

// Bytes of one block of `type`; 0 for a type this kernel does not handle.
constexpr int quant_block_bytes(QuantType type) {
  return type == QuantType::kQ4_1 ? 4 + kQuantBlock / 2 : type == QuantType::kQ8_0 ? 2 + kQuantBlock : 0;
}

// Bits of the activations in quant_matmul: 32 = fp32 as given, 16 = rounded per block of 32.
enum class ActivationBits : int { k32 = 32, k16 = 16 };

// 32 activations as int16: x[j] ~= d * q[j], |q| <= 32767; sum = d * sum(q), for Q4_1's min term.
struct Q16Block {
  float d;
  float sum;
  int16_t q[kQuantBlock];
};

// Round n floats (n a multiple of 32) into n / 32 blocks: d = max|x| / 32767, nearest (ties to even).
void quantize_activations(const float* x, int64_t n, Q16Block* out);

// y[m * N + n] = sum_k x[m * K + k] * W[n, k] for m < M, with W row n stored as K / 32 contiguous
// blocks of `type` at w + n * (K / 32) * quant_block_bytes(type). x and y are contiguous fp32;
// K must be a multiple of 32. Output rows are split over `num_threads` OpenMP threads.
void quant_matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
                  int num_threads, ActivationBits bits);

}  // namespace bastion::cpu
