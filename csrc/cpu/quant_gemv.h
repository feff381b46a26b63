// Matmul straight from GGUF quantized blocks: y[M, N] = x[M, K] @ W^T.
// Single-stream decode reads every weight once per token, so reading the ~4.5-bit blocks instead of
// fp32 weights is what makes it fast. Activations in three precisions:
//  - 32: fp32 as given, the fp32 matmul with the dequantized W up to summation order;
//  - 16: x rounded per 32 values to int16 with one scale (relative error ~2e-5 per matmul), integer
//    dot products per block. With VNNI (AVX-512 or AVX-VNNI) the int16 values are split in two int8
//    planes (q = 256 h + l) multiplied against the weights' unsigned bytes by vpdpbusd
//    (quant_i8_kernel.inc); on a plain AVX2 CPU, madd_epi16 on weights widened to int16;
//  - 8: llama.cpp's Q8_0 activations, int8 per 32 values (relative error ~4e-3 per matmul; SmolLM2's
//    greedy answers can change, see bench/README.md): one vpdpbusd (or AVX2 maddubs) per 64 / 32
//    weights, the fastest path.
// The instruction set is picked at run time (QuantIsa); the library itself builds for AVX2.
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

// Bits of the activations in quant_matmul: 32 = fp32 as given, 16 / 8 = rounded per block of 32.
enum class ActivationBits : int { k32 = 32, k16 = 16, k8 = 8 };

// The instruction set of the integer kernels. kAuto: the best this CPU runs (or BASTION_QUANT_ISA:
// "avx2", "avxvnni", "avx512vnni"). kAvx2: the int16 madd kernel for 16-bit activations, maddubs for
// 8-bit; kAvxVnni: 256-bit VEX vpdpbusd; kAvx512Vnni: 512-bit vpdpbusd (AVX512F/BW/VL/VNNI).
enum class QuantIsa : int { kAuto = 0, kAvx2 = 1, kAvxVnni = 2, kAvx512Vnni = 3 };

// The best instruction set this CPU (and OS) runs, and whether it runs `isa` (kAuto: true).
QuantIsa detected_quant_isa();
bool quant_isa_supported(QuantIsa isa);
// The one quant_matmul uses now: set_quant_isa's, else BASTION_QUANT_ISA's (read once), else detected.
QuantIsa active_quant_isa();
// Force an instruction set (tests and benchmarks); kAuto goes back to the default. Returns false, and
// changes nothing, when this CPU cannot run it.
bool set_quant_isa(QuantIsa isa);
// "avx2", "avxvnni", "avx512vnni" ("auto" for kAuto); parse_quant_isa is the inverse (false: unknown).
const char* quant_isa_name(QuantIsa isa);
bool parse_quant_isa(const char* name, QuantIsa& isa);

// 32 activations as int16 (the AVX2 kernel of 16-bit activations): x[j] ~= d * q[j], |q| <= 32767; sum = d * sum(q) for the offset terms
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
// values (the caller checks). Output rows are split over `num_threads` OpenMP threads. Each row of x
// is rounded and summed on its own, in an order that depends on K only: a row's result does not
// depend on M or on the other rows (batch-invariant). `isa` kAuto = active_quant_isa().
void quant_matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
                  int num_threads, ActivationBits bits, int64_t ldy = 0, QuantIsa isa = QuantIsa::kAuto);

// out[r, :] = dequantized row rows[r] (or row first + r when rows is null) of W [N, K], r < num_rows,
// for any QuantType or FloatType number `ggml_type`: the embedding lookup of a quantized token table
// and the panels of the large-M matmul. `out` is fp32, or bf16 (rounded to nearest even) when
// `bf16_out`. Returns false (and writes nothing) for a type it does not read.
bool dequantize_rows(const uint8_t* w, int ggml_type, int64_t K, const int64_t* rows, int64_t first, int64_t num_rows,
                     void* out, bool bf16_out, int num_threads);

}  // namespace bastion::cpu
